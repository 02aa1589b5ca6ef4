"""The admins' usage page per API token (calls, tokens, cost, with the token's name and owner),
the ledger's token column and filter, and a stored gateway call followed from the official
`openai` SDK through the ledger to the usage page and support's transcript."""

from datetime import UTC, datetime, timedelta
from datetime import time as clock
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from accounts.models import ApiToken
from billing import reports
from billing.models import UsageRecord
from chat.models import Conversation, Source
from support.models import SUPPORT_GROUP

URL = "/admin/usage/"


def at(days_ago: int) -> datetime:
    return datetime.combine(reports.last_days()[-1] - timedelta(days=days_ago), clock(12), tzinfo=UTC)


def record(user, token, cost="0", prompt=0, completion=0, days_ago=0, kind="gateway") -> UsageRecord:
    return UsageRecord.objects.create(
        user=user, api_token=token, kind=kind, provider="demo", model="parley-demo", prompt_tokens=prompt,
        completion_tokens=completion, cost_usd=Decimal(cost), outcome="complete", created=at(days_ago),
    )


def token_rows(response) -> list[tuple[str, str, int, int, Decimal]]:
    return [(row.name, row.username, row.calls, row.tokens, row.cost) for row in response.context["by_token"]]


@pytest.fixture
def ledger(alice, bob):
    laptop = ApiToken.issue(alice, "laptop <script>", scopes=["gateway"])[0]
    ci = ApiToken.issue(alice, "ci", scopes=["gateway", "chat"])[0]
    server = ApiToken.issue(bob, "server", scopes=["gateway"])[0]
    record(alice, laptop, "0.10", 100, 20)
    record(alice, laptop, "0.05", 10, 5, days_ago=3)
    record(alice, laptop, "9.00", 9000, days_ago=40)  # outside the page's 30 days
    record(alice, ci, "0.50", 1000, 100, kind="reply")  # a chat reply made with a token counts too
    record(alice, None, "3.00", 5000, kind="reply")  # the chat page's own: no token
    record(bob, server, "0.01", 1, 1)
    return {"laptop": laptop, "ci": ci, "server": server}


@pytest.mark.django_db
def test_the_usage_page_sums_calls_tokens_and_cost_per_token_with_its_owner(admin_client, ledger):
    response = admin_client.get(URL)
    assert response.status_code == 200
    assert token_rows(response) == [
        ("ci", "alice", 1, 1100, Decimal("0.5")),
        ("laptop <script>", "alice", 2, 135, Decimal("0.15")),
        ("server", "bob", 1, 2, Decimal("0.01")),
    ]
    page = response.content.decode()
    assert "By API token" in page
    assert "laptop &lt;script&gt;" in page and "laptop <script>" not in page
    assert f"/admin/accounts/apitoken/{ledger['laptop'].pk}/change/" in page
    assert ledger["laptop"].prefix in page


@pytest.mark.django_db
def test_one_users_page_shows_their_tokens_alone(admin_client, ledger, bob):
    response = admin_client.get(URL, {"user": bob.pk})
    assert token_rows(response) == [("server", "bob", 1, 2, Decimal("0.01"))]


@pytest.mark.django_db
def test_a_deleted_tokens_calls_stay_counted_under_its_owner(admin_client, ledger):
    ledger["laptop"].delete()
    response = admin_client.get(URL)
    assert ("(deleted token)", "alice", 2, 135, Decimal("0.15")) in token_rows(response)


@pytest.mark.django_db
def test_the_ledger_shows_and_filters_by_token(admin_client, ledger):
    listed = admin_client.get("/admin/billing/usagerecord/", {"api_token__id__exact": ledger["server"].pk})
    assert [entry.api_token_id for entry in listed.context["cl"].result_list] == [ledger["server"].pk]
    rows = listed.content.decode().split('id="result_list"')[1]
    assert f"server ({ledger['server'].prefix}…)" in rows
    everything = admin_client.get("/admin/billing/usagerecord/").content.decode()
    assert "laptop &lt;script&gt;" in everything and "laptop <script>" not in everything


@pytest.mark.django_db
def test_people_without_ledger_rights_cannot_see_it(alice_client, ledger):
    assert alice_client.get(URL).status_code in (302, 403)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_stored_gateway_call_reaches_the_usage_page_and_supports_transcript(live_app, alice, django_user_model):
    from openai import OpenAI

    token, raw = ApiToken.issue(alice, "reporting bot", scopes=["gateway"], stores_calls=True)
    client = OpenAI(base_url=f"{live_app.url}/v1", api_key=raw, max_retries=0, timeout=30)
    reply = client.chat.completions.create(model="parley-demo", messages=[{"role": "user", "content": "hello /words 5"}])
    assert reply.choices[0].message.content

    rows = UsageRecord.objects.filter(api_token=token)
    assert [row.kind for row in rows] == ["gateway"]
    admin = django_user_model.objects.create_superuser("root", password="root-password-123")
    staff = Client()
    staff.force_login(admin)
    usage = token_rows(staff.get(URL))
    assert usage == [("reporting bot", "alice", 1, rows[0].total_tokens, rows[0].cost_usd)]

    conversation = Conversation.objects.get(api_token=token)
    assert conversation.source == Source.GATEWAY
    agent = django_user_model.objects.create_user("sam", password="sam-password-123")
    agent.groups.add(Group.objects.get(name=SUPPORT_GROUP))
    support = Client()
    support.force_login(agent)
    page = support.get(f"/support/c/{conversation.pk}/").content.decode()
    assert "Came through" in page and "OpenAI/Anthropic gateway, token &#x27;reporting bot&#x27;" in page
    exported = support.get(f"/support/c/{conversation.pk}/export.json").json()
    assert (exported["source"], exported["api_token"]) == ("gateway", "reporting bot")
