"""What a plan's limit check adds to a send, at a steady rate of sends (200 a second by default).

    .venv/bin/python -m bench.limits --rate 200 --seconds 30

The check runs exactly as the send transaction runs it (chat.replies._store_turn), on one thread
as the shared database thread does: inside the transaction, after the conversation's row is read
(with its model and, for the check, its owner: suspension and plan, fresh), the user's limits
(accounts.plans.limits_for, plans and overrides cached), then billing.calls.admit, the one admission
every model call goes through: the allowed models, the fallback model's threshold, the history
fitted and priced, and the atomic reservation in Redis. What the owner's columns add to the
conversation's read is measured apart. Sends are paced open-loop: each is due at start + i / rate,
whether or not the one before has ended; how many started late (more than 1 ms after they were
due) is reported.

Users: --users of them, round robin, on a plan that sets every limit (none is reached) and has a
fallback model, so every branch of the check runs. Each reservation is released after it is
measured (a reply would settle it when it ends). Database: a fresh SQLite in a temp dir. Redis:
REDIS_URL, or an embedded one when unset; keys go under a unique prefix and are removed.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="checks a second")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds (after 3 s of warm-up)")
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args()

    temp = Path(tempfile.mkdtemp(prefix="parley-bench-limits-"))
    os.environ["DATABASE_URL"] = f"sqlite:///{temp / 'bench.sqlite3'}"
    os.environ["PARLEY_KEY_PREFIX"] = f"parley-bench-{uuid.uuid4().hex[:8]}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    embedded = None
    if not os.environ.get("REDIS_URL"):
        from parley import embedded_redis

        embedded = embedded_redis.start()
        os.environ["REDIS_URL"] = embedded.url
    try:
        run(args)
    finally:
        cleanup()
        if embedded is not None:
            embedded.stop()


def run(args: argparse.Namespace) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from accounts.models import Plan, User
    from accounts.plans import limits_for
    from billing import calls
    from chat.models import ChatModel, Conversation
    from parley import statements

    call_command("migrate", verbosity=0)
    model = ChatModel.objects.get(name="gpt-4.1")
    plan = Plan.objects.create(
        name="Benchmark (every limit)", requests_per_minute=1_000_000, requests_per_day=10_000_000,
        concurrent_replies=100_000, tokens_per_day=10**12, tokens_per_month=10**13, cost_per_month=Decimal("99999999"),
        max_output_tokens=4096, fallback_model=ChatModel.objects.get(name="gpt-4.1-mini"), fallback_at_percent=80,
    )
    plan.allowed_models.set(ChatModel.objects.all())
    users = [User.objects.create_user(f"limits{index}", plan=plan) for index in range(args.users)]
    conversations = [(user.pk, Conversation.objects.create(owner=user, model=model).pk) for user in users]
    # A first message of about 120 tokens, as the check was measured with before.
    PROMPT = [("user", "How do I keep a sourdough starter alive over a two-week holiday? " * 7)]

    def read_conversation(user_id: int, conversation_id: int, related: tuple[str, ...]) -> Conversation:
        found = statements.select_one(Conversation, {"id": conversation_id, "owner": user_id}, related=related, lock=True)
        assert isinstance(found, Conversation)
        return found

    def check(user_id: int, owner: User) -> calls.Admitted:
        # What chat.replies._store_turn asks of the plan, through the same call: billing.calls.admit.
        suspended, limits = limits_for(user_id, owner)
        assert not suspended
        return calls.admit(user_id, limits, model, "", PROMPT, kind="reply")

    def paced(seconds: float) -> tuple[list[float], int, float, int]:
        count = int(seconds * args.rate)
        service, late = [], 0
        cpu_start = time.process_time()
        start = time.perf_counter()
        for index in range(count):
            due = start + index / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            late += delay < -0.001
            user_id, conversation_id = conversations[index % len(conversations)]
            with transaction.atomic():
                conversation = read_conversation(user_id, conversation_id, ("model", "owner"))
                began = time.perf_counter()
                reservation = check(user_id, conversation.owner)
                ended = time.perf_counter()
            service.append((ended - began) * 1000)
            calls.release(reservation)
        cpu = time.process_time() - cpu_start
        return service, late, cpu, count

    paced(3.0)  # warm-up: connections, caches, the scripts loaded into Redis
    service, late, cpu, count = paced(args.seconds)
    # The release after each check is Redis work too; measure the check alone for the CPU figure.
    owners = {user.pk: user for user in users}
    started_cpu = time.process_time()
    reservations = [check(user_id, owners[user_id]) for user_id, _ in conversations * 5]
    check_cpu = (time.process_time() - started_cpu) / len(reservations)
    for reservation in reservations:
        calls.release(reservation)
    join_cost = {}
    for related in (("model",), ("model", "owner"), ("model",), ("model", "owner")):  # twice each: warm
        took = []
        for user_id, conversation_id in conversations * 10:
            began = time.perf_counter()
            read_conversation(user_id, conversation_id, related)
            took.append((time.perf_counter() - began) * 1000)
        join_cost[related] = statistics.median(took)

    print(f"limit check at {args.rate:g}/s for {args.seconds:g} s: {count} checks, {args.users} users, "
          f"Python {sys.version.split()[0]}, Redis {os.environ['REDIS_URL'].split('@')[-1]}")
    print("| | p50 | p90 | p99 | p99.9 | max | mean |")
    print("|---|---|---|---|---|---|---|")
    cells = [percentile(service, share) for share in (0.5, 0.9, 0.99, 0.999)] + [max(service), statistics.fmean(service)]
    print("| check, wall (ms) | " + " | ".join(f"{value:.3f}" for value in cells) + " |")
    print(f"Sends that started more than 1 ms late: {late} of {count}")
    print(f"CPU per check (the check alone, back to back): {check_cpu * 1000:.3f} ms; "
          f"the paced loop with reads and releases: {cpu / count * 1000:.3f} ms per send")
    added = join_cost[("model", "owner")] - join_cost[("model",)]
    print(f"The conversation's read, back to back (median): {join_cost[('model',)]:.3f} ms with its model, "
          f"{join_cost[('model', 'owner')]:.3f} ms with its owner too ({added * 1000:+.0f} µs)")


def cleanup() -> None:
    try:
        import redis
        from django.conf import settings

        client = redis.Redis.from_url(settings.REDIS_URL)
        keys = list(client.scan_iter(f"{settings.PARLEY_KEY_PREFIX}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception as error:  # the numbers are printed; a leftover key is not worth a traceback
        print(f"cleanup: {error}", file=sys.stderr)


if __name__ == "__main__":
    main()
