"""Prepares a fresh benchmark database (run after `manage.py migrate`, with the daphne environment).

Creates bench users, each with an API token and a few empty conversations (one per stream and
phase; the send-cost checks use one per send), the benchmark models (all provider "openai",
pointed at the fake upstream), and, on SQLite, triggers that count row writes per table. Prints JSON.

One user per concurrent stream, as in real use: a user's other tabs get a notice for every send
(streaming/feeds.py), so N streams of one user would cost N^2 notice frames.

    python -m bench.setup_db --upstream http://127.0.0.1:8001/v1 --users 200 --conversations 30
"""

import argparse
import json
import os

import django

# Database-side write counters: every row inserted or updated in these tables bumps a counter in
# the same transaction, whatever code path wrote it. Only the benchmark's throwaway database has them.
COUNTED_TABLES = ("chat_message", "chat_conversation", "accounts_apitoken")

# name -> model-name suffix read by bench.upstream (`#key=value&...` overrides its defaults)
MODELS = {
    "bench-model": "",  # the upstream's defaults: 200 tokens at 50 tokens/s
    "bench-tiny": "#tokens=1&rate=0",  # a one-token reply: the fixed cost of a reply
    "bench-hold": "#first=600",  # no token for 10 minutes: the send path alone
    # An agent run of 10 quick steps (bench/agents.py): 3 answers of 2 calculate calls each, 6 tool
    # steps, then a 20-token answer, every answer written at once.
    "bench-agent": "#tools=6&calls=2&tokens=20&rate=0",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True, help="base URL of bench.upstream, ending in /v1")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=30, help="per user")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")
    django.setup()

    from django.db import connection, transaction

    from accounts.models import ApiToken, Plan, User
    from chat.models import ChatModel, Conversation

    with transaction.atomic():
        models = {}
        for order, (name, suffix) in enumerate(MODELS.items()):
            models[name] = ChatModel.objects.create(
                name=name + suffix, label=name, provider="openai", base_url=args.upstream,
                context_window=1_000_000, max_output_tokens=4096, sort_order=1000 + order,
            )
        users = []
        unlimited = Plan.objects.create(name="Benchmark (no limits)")
        for index in range(args.users):
            # No password: token only, and no hashing cost. Limits are checked on every send as
            # always, but on a plan without limits: the benchmark's held replies must not be refused.
            user = User.objects.create_user(f"bench{index}", plan=unlimited)
            _, raw_token = ApiToken.issue(user, "bench")
            conversations = Conversation.objects.bulk_create(
                [Conversation(owner=user, model=models["bench-model"]) for _ in range(args.conversations)]
            )
            users.append({"token": raw_token, "conversations": [c.pk for c in conversations]})
    if connection.vendor == "sqlite":  # bench.load reads them; they are written in SQLite's syntax
        count_writes()
    print(json.dumps({"models": {name: model.name for name, model in models.items()}, "users": users}))


def count_writes() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_writes (name TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0)")
        for table in COUNTED_TABLES:
            for kind in ("insert", "update"):
                name = f"{table}_{kind}"
                cursor.execute("INSERT INTO bench_writes (name, n) VALUES (%s, 0)", [name])
                cursor.execute(
                    f"CREATE TRIGGER bench_{name} AFTER {kind.upper()} ON {table} "
                    f"BEGIN UPDATE bench_writes SET n = n + 1 WHERE name = '{name}'; END"
                )


if __name__ == "__main__":
    main()
