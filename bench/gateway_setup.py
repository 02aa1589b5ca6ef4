"""Prepares Parley's side of the gateway benchmark (run after `manage.py migrate`, with daphne's environment).

Creates the benchmark model (provider "openai", pointed at the fake upstream, with prices so that
every call is priced and its cost reserved and settled), one plan that sets every limit a gateway
call is checked against (requests a minute and a day, concurrent replies, tokens a day and a
month, a monthly budget, the most output tokens, the allowed models), and one user per concurrent
stream on that plan, each with a gateway-scoped API token. The limits are high enough never to be
reached by the benchmark: they are checked on every call, not hit. A probe user on a plan of one
request a minute shows that they are live. Prints JSON.

    python -m bench.gateway_setup --upstream http://127.0.0.1:8001/v1 --users 200

`--ledger` instead prints the gateway rows of the ledger (billing.UsageRecord) and their cost.
"""

import argparse
import json
import os
from decimal import Decimal

import django

MODEL = "bench-gw"
# Prices of a mid-sized model; LiteLLM's side is configured with the same ones (bench/gateway.py).
INPUT_PRICE_PER_MILLION = Decimal("2.00")
OUTPUT_PRICE_PER_MILLION = Decimal("8.00")
# Each user's monthly budget in dollars, and LiteLLM's max_budget per key: far above what a run spends.
BUDGET = Decimal("1000")


def setup(upstream: str, users: int) -> dict:
    from django.db import transaction

    from accounts.models import ApiToken, Plan, User
    from chat.models import ChatModel

    with transaction.atomic():
        model = ChatModel.objects.create(
            name=MODEL, label=MODEL, provider="openai", base_url=upstream, context_window=1_000_000, max_output_tokens=4096,
            input_price_per_million=INPUT_PRICE_PER_MILLION, output_price_per_million=OUTPUT_PRICE_PER_MILLION, sort_order=1000,
        )
        plan = Plan.objects.create(
            name="Gateway benchmark (every limit)", requests_per_minute=100_000, requests_per_day=10_000_000,
            concurrent_replies=1_000, tokens_per_day=10**12, tokens_per_month=10**13, cost_per_month=BUDGET,
            max_output_tokens=4096,
        )
        plan.allowed_models.set([model])
        # The probe: one request a minute, so a second call in a row must be refused (bench/gateway.py
        # checks that the limits are live before measuring).
        probe_plan = Plan.objects.create(name="Gateway benchmark (probe)", requests_per_minute=1, cost_per_month=BUDGET)
        probe_plan.allowed_models.set([model])
        _, probe = ApiToken.issue(User.objects.create_user("gwbench-probe", plan=probe_plan), "probe", scopes=["gateway"])
        tokens = []
        for index in range(users):
            user = User.objects.create_user(f"gwbench{index}", plan=plan)
            _, raw = ApiToken.issue(user, "gateway bench", scopes=["gateway"])
            tokens.append(raw)
    return {"model": MODEL, "tokens": tokens, "probe": probe}


def ledger() -> dict:
    from django.db.models import Count, Sum

    from billing.models import UsageRecord

    rows = UsageRecord.objects.filter(kind=UsageRecord.Kind.GATEWAY).aggregate(
        rows=Count("id"), with_token=Count("api_token"), cost=Sum("cost_usd"),
    )
    complete = UsageRecord.objects.filter(kind=UsageRecord.Kind.GATEWAY, outcome="complete").count()
    return {"rows": rows["rows"], "complete": complete, "with_token": rows["with_token"], "cost_usd": str(rows["cost"] or 0)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", help="base URL of bench.upstream, ending in /v1")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--ledger", action="store_true", help="print the gateway ledger rows instead")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")
    django.setup()
    print(json.dumps(ledger() if args.ledger else setup(args.upstream, args.users)))


if __name__ == "__main__":
    main()
