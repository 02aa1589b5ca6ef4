"""The support console's list: page 1 against page 1,000, and the memory of a CSV export of
100,000 conversations.

    .venv/bin/python -m bench.support_list --conversations 100000            # SQLite (a temp file)
    .venv/bin/python -m bench.support_list --database postgres://postgres@127.0.0.1:5432/parley_bench_list

1. A fresh database (on PostgreSQL the named database is dropped and made again): migrations,
   --users users, --conversations conversations spread over a year, two messages each (one reply
   in fifty failed), negative feedback on one in a hundred, a flag on one in two hundred.
2. **List**: the console's query (support/listing.py: filters, the row's marks, keyset) for page 1
   and for page 1,000 (50 rows a page; the cursor of page 1,000 is found once, beforehand), each
   --tries times: p50 / p95 in ms. Then the same with a filter (negative feedback), whose rows are
   rare, so its page 1,000 does not exist: its last page is used instead.
3. **CSV export**: the streamed CSV of every conversation (support/exports.py, what the console
   sends), read to its end in this process: the peak of Python's heap while it runs (tracemalloc),
   the rows and bytes, and the time.
Nothing here runs over HTTP: this measures the queries and the export's memory, not daphne.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import tempfile
import time
import tracemalloc


def prepare(database: str | None) -> str:
    if database is None:
        path = os.path.join(tempfile.mkdtemp(prefix="parley-bench-list-"), "db.sqlite3")
        return f"sqlite:///{path}"
    import psycopg

    name = database.rsplit("/", 1)[1]
    admin = database.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin.replace("postgres://", "postgresql://", 1), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return database


def fill(users: int, conversations: int) -> None:
    from django.db import connection, transaction

    from accounts.models import User
    from chat.models import ChatModel

    model = ChatModel.objects.get(name="parley-demo")
    User.objects.bulk_create([User(username=f"user{index}", email=f"user{index}@example.com") for index in range(users)])
    user_ids = list(User.objects.order_by("id").values_list("id", flat=True))
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    step = dt.timedelta(days=365) / conversations
    chunk = 5000
    with transaction.atomic(), connection.cursor() as cursor:
        for first in range(0, conversations, chunk):
            rows = []
            for index in range(first, min(first + chunk, conversations)):
                moment = start + step * index
                rows.append((user_ids[index % users], f"Conversation {index} about invoices", True, model.pk, "",
                             moment, moment + dt.timedelta(minutes=index % 90), False))
            cursor.executemany(
                "INSERT INTO chat_conversation (owner_id, title, title_is_auto, model_id, system_prompt, created, updated, archived)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", rows,
            )
        cursor.execute("SELECT id, created FROM chat_conversation ORDER BY id")
        made = cursor.fetchall()
        for first in range(0, len(made), chunk):
            rows = []
            for pk, created in made[first:first + chunk]:
                failed = pk % 50 == 0
                rows.append((pk, "user", "Where is my invoice?", "complete", "", "", "", "", "", "", "", "", "{}", created, False, ""))
                rows.append((pk, "assistant", "It was sent on Monday.", "failed" if failed else "complete",
                             "rate_limited" if failed else "", "", "", "demo", "parley-demo", "", "", "", "{}", created, False, ""))
            cursor.executemany(
                "INSERT INTO chat_message (conversation_id, role, content, status, error_code, error_text, notice, provider, model,"
                " model_version, generator, last_cursor, limits, created, tokens_estimated, quota_claim)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows,
            )
        cursor.execute(
            "INSERT INTO support_feedback (message_id, conversation_id, user_id, rating, comment, model, created, updated)"
            " SELECT m.id, m.conversation_id, c.owner_id, -1, '', 'parley-demo', m.created, m.created"
            " FROM chat_message m JOIN chat_conversation c ON c.id = m.conversation_id"
            " WHERE m.role = 'assistant' AND m.conversation_id % 100 = 0"
        )
        cursor.execute(
            "INSERT INTO support_flag (conversation_id, reason, author_name, cleared_by, created)"
            " SELECT id, 'check this', 'bench', '', created FROM chat_conversation WHERE id % 200 = 0"
        )
    if connection.vendor == "postgresql":  # what autovacuum would have done by the time anyone reads
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def timed(tries: int, work) -> tuple[float, float]:
    samples = []
    for _ in range(tries):
        began = time.perf_counter()
        work()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, round(0.95 * len(samples)) - 1)]


def page_cursor(filters, number: int):
    """The cursor that starts page `number` (found once, by OFFSET: setup, not what is measured)."""
    from support import listing

    column = filters.sort.lstrip("-")
    order = (f"-{column}", "-id") if filters.sort.startswith("-") else (column, "id")
    rows = listing.conversations(filters).order_by(*order)
    before = rows[(number - 1) * listing.PAGE_SIZE - 1: (number - 1) * listing.PAGE_SIZE]
    last = list(before)
    if not last:
        return None
    return listing.Cursor(getattr(last[0], column), last[0].pk)


def last_page_cursor(filters):
    from support import listing

    total = listing.conversations(filters).count()
    return page_cursor(filters, max(1, (total - 1) // listing.PAGE_SIZE + 1)), (total - 1) // listing.PAGE_SIZE + 1


def export(filters, traced: bool) -> tuple[int, int, float, int]:
    """Reads the whole CSV; rows, bytes, seconds and (traced) the peak of Python's heap. Tracing
    slows Python several times over, so the time is taken from an untraced run."""
    from support import exports

    async def read_all() -> tuple[int, int]:
        rows = size = 0
        async for lines in exports._csv_lines(filters, False):
            rows += lines.count("\n")
            size += len(lines.encode())
        return rows, size

    if traced:
        tracemalloc.start()
    began = time.perf_counter()
    rows, size = asyncio.run(read_all())
    seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    if traced:
        tracemalloc.stop()
    return rows, size, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", help="a PostgreSQL URL whose database is dropped and made again; SQLite when absent")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--tries", type=int, default=30)
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = prepare(args.database)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from support import listing

    call_command("migrate", verbosity=0)
    began = time.perf_counter()
    fill(args.users, args.conversations)
    print(f"{connection.vendor}: {args.conversations} conversations filled in {time.perf_counter() - began:.1f} s")
    plain = listing.Filters()
    negative = listing.Filters(negative=True)
    later = page_cursor(plain, 1000)
    last_negative, last_number = last_page_cursor(negative)
    cases = [
        ("page 1", plain, None),
        ("page 1,000", plain, later),
        ("negative feedback, page 1", negative, None),
        (f"negative feedback, page {last_number} (its last)", negative, last_negative),
    ]
    for label, filters, cursor in cases:
        p50, p95 = timed(args.tries, lambda f=filters, c=cursor: list(listing.page(f, c).rows))
        print(f"  list {label}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    rows, size, seconds, _ = export(plain, traced=False)
    *_, peak = export(plain, traced=True)
    print(f"  CSV export: {rows - 1} rows, {size / 1e6:.1f} MB in {seconds:.1f} s; peak Python heap {peak / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
