"""Plans, per-user overrides, suspension and the usage ledger."""

import asyncio
from decimal import Decimal

import pytest
from django.test import Client

from accounts.models import Plan, PlanOverride, User
from accounts.plans import effective_limits
from billing.models import UsageRecord
from chat import replies
from chat.actions import delete_conversation
from chat.models import ChatModel, Conversation
from chat.titles import generate_title
from tests.fakes import Scenario
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events


@pytest.mark.django_db
def test_the_seeded_plans_and_a_new_sign_up_on_the_default_one():
    assert set(Plan.objects.values_list("name", flat=True)) >= {"Free", "Pro", "Staff"}
    assert Plan.default().name == "Free"
    response = Client().post("/accounts/signup/", {"username": "newbie", "password1": "a-long-pass-42!", "password2": "a-long-pass-42!"})
    assert response.status_code == 302
    assert User.objects.get(username="newbie").plan.name == "Free"


@pytest.mark.django_db
def test_effective_limits_are_the_plan_with_the_users_overrides(alice):
    free = Plan.objects.get(name="Free")
    assert alice.plan is None  # created outside sign-up: the default plan applies
    limits = effective_limits(alice)
    assert limits.plan == "Free" and limits.requests_per_minute == free.requests_per_minute
    assert limits.allowed_models is None
    demo = ChatModel.objects.get(name="parley-demo")
    override = PlanOverride.objects.create(user=alice, requests_per_minute=99, cost_per_month=Decimal("7.50"))
    override.allowed_models.add(demo)
    alice.plan = Plan.objects.get(name="Pro")
    alice.save()
    limits = effective_limits(alice)
    assert limits.plan == "Pro"
    assert limits.requests_per_minute == 99 and limits.cost_per_month == Decimal("7.50")
    assert limits.requests_per_day == alice.plan.requests_per_day  # not overridden: the plan's
    assert limits.allowed_models == frozenset({demo.pk})


@pytest.mark.django_db(transaction=True)
async def test_a_reply_is_recorded_in_the_ledger_with_its_cost(alice):
    await ChatModel.objects.filter(name="parley-demo").aupdate(
        input_price_per_million=Decimal("1.00"), output_price_per_million=Decimal("2.00")
    )
    event = await replies.send_message(alice, None, "Count these words /words 40")
    final = (await reply_events(alice, event["assistant_message"]["id"]))[-1]
    entry = await UsageRecord.objects.aget(message_id=event["assistant_message"]["id"])
    assert (entry.user_id, entry.kind, entry.outcome, entry.model) == (alice.pk, "reply", "complete", "parley-demo")
    assert entry.conversation_id == event["conversation"]["id"]
    assert entry.completion_tokens == final["usage"]["completion_tokens"] == 40
    assert entry.prompt_tokens == final["usage"]["prompt_tokens"] and not entry.estimated
    assert entry.cost_usd == (Decimal(entry.prompt_tokens) * 1 + Decimal(40) * 2) / 1_000_000
    assert entry.duration_ms is not None


@pytest.mark.django_db(transaction=True)
async def test_a_stopped_reply_is_recorded_with_estimated_tokens(alice):
    event = await replies.send_message(alice, None, "Go on /words 2000 /slow 10")
    reply_id = event["assistant_message"]["id"]
    await asyncio.sleep(0.3)
    await replies.stop_message(alice, reply_id)
    final = (await reply_events(alice, reply_id))[-1]
    assert final["status"] == "stopped"
    entry = await UsageRecord.objects.aget(message_id=reply_id)
    assert entry.outcome == "stopped" and entry.estimated
    assert entry.completion_tokens > 0 and entry.prompt_tokens > 0


@pytest.mark.django_db(transaction=True)
async def test_a_reply_whose_conversation_was_deleted_is_still_charged(alice):
    event = await replies.send_message(alice, None, "Go on /words 2000 /slow 10")
    await asyncio.sleep(0.2)
    conversation = await Conversation.objects.aget(pk=event["conversation"]["id"])
    await asyncio.to_thread(delete_conversation, conversation)  # stops the reply, as the page's Delete does
    for _ in range(100):
        entry = await UsageRecord.objects.filter(user=alice).afirst()
        if entry is not None:
            break
        await asyncio.sleep(0.05)
    assert entry is not None and entry.conversation_id is None and entry.message_id is None
    assert entry.completion_tokens > 0


@pytest.mark.django_db(transaction=True)
def test_a_title_call_is_recorded_as_its_own_usage(alice, settings):
    async def with_fake():
        async with OpenAIFake(Scenario(tokens=4)) as fake:
            settings.OPENAI_BASE_URL = fake.base_url
            settings.OPENAI_API_KEY = "sk-test"
            model = await ChatModel.objects.acreate(
                name="fake-gpt", label="Fake", provider="openai", base_url=fake.base_url,
                input_price_per_million=Decimal("3"), output_price_per_million=Decimal("5"),
            )
            conversation = await Conversation.objects.acreate(owner=alice, model=model)
            await conversation.messages.acreate(role="user", content="Plan a trip")
            await conversation.messages.acreate(role="assistant", content="Sure.")
            return conversation, await asyncio.to_thread(generate_title, conversation.pk)

    conversation, title = asyncio.run(with_fake())
    assert title
    entry = UsageRecord.objects.get(kind="title", conversation=conversation)
    assert entry.completion_tokens == 4 and entry.outcome == "complete" and not entry.estimated
    assert entry.cost_usd == (Decimal(entry.prompt_tokens) * 3 + 4 * 5) / 1_000_000


@pytest.mark.django_db
def test_admins_see_plans_overrides_usage_and_can_suspend(alice, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="root-pass-123456")
    conversation = Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))
    UsageRecord.objects.create(user=alice, conversation=conversation, kind="reply", provider="demo", model="parley-demo",
                               prompt_tokens=100, completion_tokens=50, cost_usd=Decimal("0.0123"), outcome="complete")
    client = Client()
    client.force_login(root)
    page = client.get(f"/admin/accounts/user/{alice.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Overrides of the plan" in html and "Today" in html and "150" in html and "$0.0123" in html
    assert client.get("/admin/accounts/plan/").status_code == 200
    assert client.get(f"/admin/accounts/plan/{Plan.objects.get(name='Pro').pk}/change/").status_code == 200
    assert client.get("/admin/billing/usagerecord/").status_code == 200
    response = client.post("/admin/accounts/user/", {"action": "suspend", "_selected_action": [alice.pk]})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.suspended
    from django.contrib.admin.models import LogEntry

    assert LogEntry.objects.filter(object_id=str(alice.pk), change_message="Suspended").count() == 1
    client.post("/admin/accounts/user/", {"action": "suspend", "_selected_action": [alice.pk]})
    assert LogEntry.objects.filter(object_id=str(alice.pk), change_message="Suspended").count() == 1  # already was


@pytest.mark.django_db
def test_admins_edit_a_plan_and_the_price_table_and_calls_follow(alice, admin_client):
    from accounts.plans import forget_cached_limits, limits_for

    pro = Plan.objects.get(name="Pro")
    mini = ChatModel.objects.create(name="gpt-4.1-mini", label="GPT-4.1 mini", provider="openai")
    form = {
        "name": "Pro", "requests_per_minute": "7", "requests_per_day": "", "concurrent_replies": "3",
        "tokens_per_day": "", "tokens_per_month": "", "cost_per_month": "12.50", "max_output_tokens": "1000",
        "allowed_models": [str(mini.pk)], "fallback_model": str(mini.pk), "fallback_at_percent": "90",
    }
    saved = admin_client.post(f"/admin/accounts/plan/{pro.pk}/change/", form)
    assert saved.status_code == 302, saved.content.decode()[:2000]
    User.objects.filter(pk=alice.pk).update(plan=pro)
    forget_cached_limits()
    _, limits = limits_for(alice.pk)
    assert (limits.plan, limits.requests_per_minute, limits.requests_per_day, limits.cost_per_month) == ("Pro", 7, None, Decimal("12.50"))
    assert limits.allowed_models == {mini.pk} and limits.fallback_model_id == mini.pk and limits.fallback_at_percent == 90
    refused = admin_client.post(f"/admin/accounts/plan/{pro.pk}/change/", {**form, "cost_per_month": "-1"})
    assert refused.status_code == 200 and "errornote" in refused.content.decode()  # bad input: the form says so

    prices = admin_client.post("/admin/chat/chatmodel/", _changelist_edit(admin_client, mini, output_price_per_million="2.5000"))
    assert prices.status_code == 302, prices.context["cl"].formset.errors
    mini.refresh_from_db()
    assert mini.output_price_per_million == Decimal("2.5")
    negative = admin_client.post("/admin/chat/chatmodel/", _changelist_edit(admin_client, mini, output_price_per_million="-1"))
    assert negative.status_code == 200 and negative.context["cl"].formset.errors  # refused, with the reason
    mini.refresh_from_db()
    assert mini.output_price_per_million == Decimal("2.5")


def _changelist_edit(client, model, **changes):
    """The changelist's list_editable form as the browser would post it, with one row changed."""
    page = client.get("/admin/chat/chatmodel/")
    formset = page.context["cl"].formset
    management = formset.management_form
    data = {"_save": "Save", **{f"{management.prefix}-{key}": str(value) for key, value in management.initial.items()}}
    for row in formset.forms:
        for name, field in row.fields.items():
            value = row.initial.get(name, field.initial)
            if row.instance.pk == model.pk and name in changes:
                value = changes[name]
            if isinstance(value, bool):
                if value:
                    data[row.add_prefix(name)] = "on"
                continue
            data[row.add_prefix(name)] = "" if value is None else str(getattr(value, "pk", value))
    return data
