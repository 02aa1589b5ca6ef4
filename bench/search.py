"""Full-text search (support/fulltext.py) over 1,000,000 messages, on SQLite and on PostgreSQL.

    .venv/bin/python -m bench.search --db sqlite                # a fresh file in /tmp
    .venv/bin/python -m bench.search --db postgres              # a fresh database `parley_bench`
    .venv/bin/python -m bench.search --db postgres --reuse      # measure again, no new fill

1. A fresh database, migrated; 200 users, 50,000 conversations of 20 messages (a user's question
   of about 15 words, a reply of about 60), 1,000,000 messages in all. Words come from a Zipf
   distribution over about 20,000 (function words, a support vocabulary, a long tail of made-up
   words); 5% of messages hold an e-mail address (first.last@...), 3% "thank you for your
   patience", 0.5% "refund policy", 0.1% "quasar", exactly 10 "zyzzogeton", 0.05% the name
   "alice" outside an address. PostgreSQL: COPY, then the GIN index built once; SQLite:
   executemany in transactions of 50,000 rows through the FTS triggers, as the app writes.
2. Each query (`QUERIES`: rare, common, phrases, prefixes, no hit, a name found mostly inside
   masked addresses, scoped, a second page) as the console asks it (50 hits a page, masked,
   with snippets), once to warm up and then --tries times: wall time p50 / p95 per query and over
   all, the hits and whether there is a next page.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PG_SERVER = "postgres://postgres@127.0.0.1:5432"
PG_DATABASE = "parley_bench"
SQLITE_PATH = Path("/tmp/parley-bench-search/search.sqlite3")
USERS = 200
PER_CONVERSATION = 20
BATCH = 50_000
SEED = 12

COMMON = (
    "the to and a i you it of is that for in my this on can with be have not are do what how we but "
    "your if me so at as or was just like get will there an all about from one would they need when "
    "some it's don't please help thanks know want use make any also out up then time work should "
    "could which more new now here way see did does has been very only"
).split()
DOMAIN = (
    "account order refund invoice payment shipping password error server database deploy python "
    "function email login customer support ticket billing subscription plan upgrade cancel delivery "
    "address report export import file upload download timeout crash update version release bug "
    "feature request question answer problem issue issues settings profile team admin access token "
    "api request response status code message conversation model reply search filter date month "
    "week price discount coupon charge card bank transfer receipt tax country language translate "
    "summary draft letter contract policy review schedule meeting calendar reminder backup restore "
    "migration query index table column row script install config network proxy certificate domain "
    "reference referral refurbished reformat passport passenger"
).split()
SYLLABLES = "ka lo mi ne ru ta vo shi pe dra ko lu zen bar fi gor tam wex ul qi".split()
FIRST = "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert sybil trent victor walter yvonne".split()
DOMAINS = ["example.org", "mail.example.com", "corp.example.net"]

# (label, query, scope) — scope: None, "user" (one user's messages) or "recent" (the newest 2%).
QUERIES: list[tuple[str, str, str | None]] = [
    ("rare word (10 hits)", "zyzzogeton", None),
    ("rare word (0.1%)", "quasar", None),
    ("domain word", "refund", None),
    ("commonest word", "the", None),
    ("two common words", "please help", None),
    ("common phrase (3%)", '"thank you for your patience"', None),
    ("medium phrase (0.5%)", '"refund policy"', None),
    ("prefix ref", "ref", None),
    ("prefix pass", "pass", None),
    ("prefix of one letter", "q", None),
    ("prefix databa", "databa", None),
    ("no hit", "xylophonequartz", None),
    ("rare and common", "zyzzogeton the", None),
    ("two medium words", "quasar refund", None),
    ("name mostly inside masked addresses", "alice", None),
    ("an address (dropped)", "alice.smith@example.org", None),
    ("no-hit phrase of rare words", '"quasar zyzzogeton"', None),
    ("common word, one user", "the", "user"),
    ("domain word, newest 2%", "refund", "recent"),
    ("commonest word, second page", "the", "page2"),
]


def vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    tail = {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(25_000)}
    words = COMMON + DOMAIN + sorted(tail - set(COMMON) - set(DOMAIN))
    weights, total = [], 0.0
    for rank in range(len(words)):
        total += 1 / (rank + 2.7)
        weights.append(total)
    return words, weights


def text(rng: random.Random, words: list[str], weights: list[float], count: int, rare: bool = False) -> str:
    picked = rng.choices(words, cum_weights=weights, k=count)
    if rare:
        picked.insert(rng.randrange(len(picked) + 1), "zyzzogeton")
    roll = rng.random()
    if roll < 0.05:
        picked.insert(rng.randrange(len(picked) + 1), f"{rng.choice(FIRST)}.{rng.choice(FIRST)}@{rng.choice(DOMAINS)}")
    if rng.random() < 0.03:
        picked.insert(rng.randrange(len(picked) + 1), "thank you for your patience")
    if rng.random() < 0.005:
        picked.insert(rng.randrange(len(picked) + 1), "refund policy")
    if rng.random() < 0.001:
        picked.insert(rng.randrange(len(picked) + 1), "quasar")
    if rng.random() < 0.0005:
        picked.insert(rng.randrange(len(picked) + 1), "Alice")
    sentence = " ".join(picked)
    return sentence[0].upper() + sentence[1:] + rng.choice([".", "?", "!", "."])


def setup_database(db: str, reuse: bool) -> None:
    if db == "sqlite":
        if not reuse and SQLITE_PATH.parent.exists():
            for path in SQLITE_PATH.parent.iterdir():
                path.unlink()
        SQLITE_PATH.parent.mkdir(exist_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{SQLITE_PATH}"
    else:
        import psycopg

        if not reuse:
            with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE}")
                admin.execute(f"CREATE DATABASE {PG_DATABASE}")
        os.environ["DATABASE_URL"] = f"{PG_SERVER}/{PG_DATABASE}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")
    import django

    django.setup()


def fill(messages: int) -> dict[str, float]:
    from django.core.management import call_command
    from django.db import connection, transaction

    from accounts.models import User
    from chat.models import ChatModel, Conversation, Message

    timings: dict[str, float] = {}
    started = time.monotonic()
    call_command("migrate", verbosity=0)
    timings["migrate_s"] = time.monotonic() - started

    rng = random.Random(SEED)
    words, weights = vocabulary(rng)
    start_time = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(seconds=(330 * 86400) / messages)  # a year's worth of messages, in order
    users = User.objects.bulk_create([User(username=f"bench-{n}", password="!") for n in range(USERS)])
    model = ChatModel.objects.order_by("pk").first() or ChatModel.objects.create(name="bench", label="Bench", provider="demo")
    conversations_needed = -(-messages // PER_CONVERSATION)
    conversations = Conversation.objects.bulk_create(
        [Conversation(owner=users[n % USERS], model=model, title=f"Conversation {n}", created=start_time, updated=start_time)
         for n in range(conversations_needed)],
        batch_size=5000,
    )
    fields = [f for f in Message._meta.concrete_fields if not f.primary_key]
    columns = [f.column for f in fields]
    defaults = {f.column: f.get_default() for f in fields}
    defaults.update(tokens_estimated=False, status="complete")

    rare_every = max(1, messages // 10)

    def rows():
        for n in range(messages):
            assistant = n % 2 == 1
            row = dict(defaults)
            row.update(
                conversation_id=conversations[n // PER_CONVERSATION].pk,
                role="assistant" if assistant else "user",
                content=text(rng, words, weights, rng.randint(30, 90) if assistant else rng.randint(6, 25), n % rare_every == 7),
                created=start_time + n * step,
                model="bench-model" if assistant else "",
            )
            yield [row[c] for c in columns]

    started = time.monotonic()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX chat_message_search")
            with transaction.atomic(), cursor.cursor.copy(
                f"COPY chat_message ({', '.join(columns)}) FROM STDIN"
            ) as copy:
                for row in rows():
                    copy.write_row(row)
            timings["copy_s"] = time.monotonic() - started
            started = time.monotonic()
            cursor.execute("SET maintenance_work_mem = '1GB'")
            cursor.execute("CREATE INDEX chat_message_search ON chat_message USING gin (search_vector)")
            cursor.execute("ANALYZE chat_message")
            timings["gin_index_s"] = time.monotonic() - started
    else:
        placeholders = ", ".join(["%s"] * len(columns))
        sql = f"INSERT INTO chat_message ({', '.join(columns)}) VALUES ({placeholders})"
        batch: list[list[Any]] = []
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size = -500000")
            for row in rows():
                batch.append(row)
                if len(batch) == BATCH:
                    with transaction.atomic():
                        cursor.executemany(sql, batch)
                    batch = []
            if batch:
                with transaction.atomic():
                    cursor.executemany(sql, batch)
            cursor.execute("ANALYZE")
        timings["insert_with_fts_triggers_s"] = time.monotonic() - started
    return timings


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(tries: int) -> dict[str, Any]:
    from chat.models import Message
    from support.fulltext import search

    newest = Message.objects.order_by("-id").values_list("id", flat=True).first() or 0
    total = Message.objects.count()
    scopes = {
        None: None,
        "user": Message.objects.filter(conversation__owner__username="bench-7"),
        "recent": Message.objects.filter(created__gte=Message.objects.get(pk=newest).created - timedelta(days=7)),
    }
    results, every = [], []
    for label, query, scope in QUERIES:
        before = None
        if scope == "page2":
            before = search(query).next_before
        chosen = scopes.get(scope if scope != "page2" else None)
        page = search(query, scope=chosen, before=before)  # warm up
        times = []
        for _ in range(tries):
            started = time.perf_counter()
            page = search(query, scope=chosen, before=before)
            times.append((time.perf_counter() - started) * 1000)
        every += times
        results.append({
            "label": label, "query": query, "hits": len(page.hits), "more": page.next_before is not None,
            "p50_ms": round(statistics.median(times), 1), "p95_ms": round(pct(times, 0.95), 1),
        })
        print(f"  {label:40} {query!r:36} hits {len(page.hits):3}{'+' if page.next_before else ' '}"
              f"  p50 {results[-1]['p50_ms']:7.1f} ms  p95 {results[-1]['p95_ms']:7.1f} ms", flush=True)
    return {"messages": total, "queries": results,
            "all_p50_ms": round(statistics.median(every), 1), "all_p95_ms": round(pct(every, 0.95), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--tries", type=int, default=15)
    parser.add_argument("--reuse", action="store_true", help="measure the database of the last run again")
    parser.add_argument("--out", help="write every number as JSON here")
    args = parser.parse_args()

    setup_database(args.db, args.reuse)
    report: dict[str, Any] = {"db": args.db, "python": sys.version.split()[0]}
    if not args.reuse:
        started = time.monotonic()
        report["fill"] = fill(args.messages)
        report["fill"]["total_s"] = round(time.monotonic() - started, 1)
        print(f"filled {args.messages:,} messages: {json.dumps(report['fill'])}", flush=True)
    from django.db import connection

    if connection.vendor == "sqlite":
        import sqlite3

        report["sqlite"] = sqlite3.sqlite_version
    else:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            report["postgres"] = cursor.fetchone()[0]
    report.update(measure(args.tries))
    print(f"all queries: p50 {report['all_p50_ms']} ms, p95 {report['all_p95_ms']} ms over {report['messages']:,} messages")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
