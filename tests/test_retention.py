"""Conversations past their owner's retention period are deleted with everything of theirs, a few
at a time; the ledger and the audit record stay. The owner's Delete drops the same things."""

import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Plan, SiteSettings
from agents.models import AgentRun, AgentStep, Artifact
from billing.models import UsageRecord
from chat.models import ChatModel, Conversation, Message, Upload
from sharing.models import SharedLink
from streaming import events
from streaming.keys import events_key, run_events_key, run_owner_key
from streaming.writer import SyncWriter
from support.audit import record as record_audit
from support.models import AuditEvent, Feedback, Flag, Note
from support.retention import purge_expired

# Each purge commits batch by batch and drops Redis logs once they commit: real transactions.
pytestmark = pytest.mark.django_db(transaction=True)

NOW = timezone.now()


def site_keeps(days: int | None) -> None:
    site = SiteSettings.current()
    site.retention_days = days
    site.save()


def plan_keeps(name: str, days: int | None) -> Plan:
    plan = Plan.objects.get(name=name)
    plan.retention_days = days
    plan.save()
    return plan


def chat(owner, days_idle: float, title: str = "", status: str = Message.Status.COMPLETE) -> Conversation:
    """A conversation last active `days_idle` days ago: a question and its reply, the reply's event log in Redis."""
    conversation = Conversation.objects.create(
        owner=owner, title=title, model=ChatModel.objects.get(name="parley-demo"), updated=NOW - timedelta(days=days_idle)
    )
    question = Message.objects.create(conversation=conversation, role="user", content="Hello?")
    reply = Message.objects.create(
        conversation=conversation, parent=question, role="assistant", content="Hi.", status=status, model="parley-demo"
    )
    SyncWriter().append(reply.pk, [events.delta(reply.pk, 3, "Hi.")])
    return conversation


def left(*conversations: Conversation) -> set[int]:
    return set(Conversation.objects.filter(pk__in=[c.pk for c in conversations]).values_list("pk", flat=True))


def test_conversations_are_kept_forever_by_default(alice):
    old = chat(alice, 3650)
    report = purge_expired(now=NOW)
    assert report.conversations == 0 and report.batches == 0
    assert left(old) == {old.pk}


def test_the_sites_period_deletes_what_was_idle_longer_and_keeps_the_rest(alice, bob):
    site_keeps(30)
    expired, recent, bobs_expired = chat(alice, 31), chat(alice, 29), chat(bob, 45)
    report = purge_expired(now=NOW)
    assert report.conversations == 2
    assert left(expired, recent, bobs_expired) == {recent.pk}


def test_a_plans_period_overrides_the_sites(alice, bob):
    site_keeps(30)
    bob.plan = plan_keeps("Pro", 7)
    bob.save()
    bobs_week_old, alices_week_old, bobs_new = chat(bob, 8), chat(alice, 8), chat(bob, 6)
    purge_expired(now=NOW)
    assert left(bobs_week_old, alices_week_old, bobs_new) == {alices_week_old.pk, bobs_new.pk}


def test_a_plans_period_applies_while_the_site_keeps_forever(alice, bob):
    bob.plan = plan_keeps("Pro", 7)
    bob.save()
    bobs, alices = chat(bob, 8), chat(alice, 800)
    purge_expired(now=NOW)
    assert left(bobs, alices) == {alices.pk}


def test_a_user_without_a_plan_has_the_default_plans_period(alice, bob):
    site_keeps(30)
    plan_keeps("Free", 5)  # the default plan; alice has none, bob is on Pro (the site's 30 days)
    bob.plan = Plan.objects.get(name="Pro")
    bob.save()
    alices, bobs = chat(alice, 6), chat(bob, 6)
    purge_expired(now=NOW)
    assert left(alices, bobs) == {bobs.pk}


def test_deletion_goes_in_batches_each_its_own_delete(alice):
    site_keeps(1)
    conversations = [chat(alice, 2 + index) for index in range(5)]
    with CaptureQueriesContext(connection) as queries:
        report = purge_expired(now=NOW, batch=2)
    assert (report.conversations, report.batches) == (5, 3)
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('DELETE FROM "chat_conversation"')]
    assert len(deletes) == 3
    assert left(*conversations) == set()
    assert report.rows["chat.Message"] == 10


def test_a_reply_still_streaming_or_a_run_still_running_keeps_its_conversation_until_it_ends(alice):
    site_keeps(1)
    replying = chat(alice, 5, status=Message.Status.STREAMING)
    running = chat(alice, 5)
    run = AgentRun.objects.create(owner=alice, conversation=running, goal="g", model="parley-demo", status=AgentRun.Status.RUNNING)
    idle = chat(alice, 5)
    assert purge_expired(now=NOW).conversations == 1
    assert left(replying, running, idle) == {replying.pk, running.pk}

    replying.messages.filter(role="assistant").update(status=Message.Status.COMPLETE)
    AgentRun.objects.filter(pk=run.pk).update(status=AgentRun.Status.SUCCEEDED)
    assert purge_expired(now=NOW).conversations == 2
    assert left(replying, running) == set()


def test_everything_of_an_expired_conversation_goes_but_the_ledger_and_the_audit_record(alice, bob, redis_client):
    site_keeps(30)
    doomed = chat(alice, 31)
    question, reply = doomed.messages.order_by("pk")
    upload = Upload.objects.create(
        conversation=doomed, owner=alice, name="notes.txt", content_type=Upload.TEXT, size=5, data=b"notes", text="notes", chars=5
    )
    question.attachments.add(upload)
    run = AgentRun.objects.create(owner=alice, conversation=doomed, goal="Report", model="parley-demo", status="succeeded")
    AgentStep.objects.create(run=run, index=1, kind="model", title="Thinking", status="succeeded")
    Artifact.objects.create(run=run, name="report.md", content="# Report")
    writer = SyncWriter()
    writer.set_run_owner(run.pk, alice.pk)
    writer.append_run(run.pk, [events.run_event("run_started", run.pk, 1, goal="Report", model="parley-demo")])
    SharedLink.objects.create(conversation=doomed, owner=alice, title="t", snapshot={"messages": []})
    Feedback.objects.create(message=reply, conversation=doomed, user=alice, rating=-1, model="parley-demo")
    Flag.objects.create(conversation=doomed, message=reply, reason="look", author_name="sam")
    Note.objects.create(conversation=doomed, text="a note", author_name="sam")
    charge = UsageRecord.objects.create(
        user=alice, conversation=doomed, message=reply, kind="reply", provider="demo", model="parley-demo",
        cost_usd=Decimal("0.25"), outcome="complete",
    )
    audit = record_audit(bob, "view", conversations=[doomed.pk])
    kept = chat(bob, 1)  # bob's recent one, with its own log
    kept_reply = kept.messages.get(role="assistant")
    keys = [events_key(reply.pk), run_events_key(run.pk), run_owner_key(run.pk)]
    assert redis_client.exists(*keys) == 3
    record = AuditEvent.objects.values().get()

    purge_expired(now=NOW)

    assert not Conversation.objects.filter(pk=doomed.pk).exists()
    assert not Message.objects.filter(pk__in=[question.pk, reply.pk]).exists()
    assert not Upload.objects.filter(pk=upload.pk).exists()
    assert not Upload.messages.through.objects.filter(upload_id=upload.pk).exists()
    assert not AgentRun.objects.filter(pk=run.pk).exists()
    assert not AgentStep.objects.filter(run_id=run.pk).exists() and not Artifact.objects.filter(run_id=run.pk).exists()
    assert not SharedLink.objects.exists() and not Feedback.objects.exists()
    assert not Flag.objects.exists() and not Note.objects.exists()
    assert redis_client.exists(*keys) == 0
    charge.refresh_from_db()
    assert (charge.conversation_id, charge.message_id, charge.cost_usd) == (None, None, Decimal("0.25"))
    assert AuditEvent.objects.values().get() == record
    assert record["id"] == audit.pk and record["conversations"] == [doomed.pk]
    assert left(kept) == {kept.pk} and redis_client.exists(events_key(kept_reply.pk)) == 1


def test_the_purge_logs_one_line_only_when_it_deleted_something(alice, caplog):
    site_keeps(30)
    chat(alice, 31)
    chat(alice, 40)
    with caplog.at_level(logging.INFO, logger="support.retention"):
        purge_expired(now=NOW)
        purge_expired(now=NOW)
    lines = [record.getMessage() for record in caplog.records if record.name == "support.retention"]
    assert len(lines) == 1
    assert lines[0].startswith("Retention: deleted 2 conversations (") and "4 messages" in lines[0]


def test_the_scheduled_task_purges_by_name_and_a_second_run_finds_nothing(alice, settings):
    from parley.celery import app

    site_keeps(30)
    old = chat(alice, 31)
    app.loader.import_default_modules()  # what a worker does at start: finds support/tasks.py
    task = app.tasks["support.tasks.purge_expired"]
    assert task.apply().get() == 1
    assert left(old) == set()
    assert task.apply().get() == 0
    schedule = settings.CELERY_BEAT_SCHEDULE["purge-expired-conversations"]
    assert schedule["task"] == "support.tasks.purge_expired"
    assert schedule["schedule"] == settings.PARLEY_RETENTION_PURGE_SECONDS


def test_the_owners_delete_drops_the_event_logs_too(alice, alice_client, redis_client):
    conversation = chat(alice, 0)
    reply = conversation.messages.get(role="assistant")
    run = AgentRun.objects.create(owner=alice, conversation=conversation, goal="g", model="parley-demo", status="succeeded")
    SyncWriter().append_run(run.pk, [events.run_event("run_started", run.pk, 1, goal="g", model="parley-demo")])
    keys = [events_key(reply.pk), run_events_key(run.pk)]
    assert redis_client.exists(*keys) == 2

    response = alice_client.delete(f"/api/conversations/{conversation.pk}/")

    assert response.status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert redis_client.exists(*keys) == 0


def test_a_batch_below_one_is_refused():
    with pytest.raises(ValueError):
        purge_expired(batch=0)


def test_admins_set_the_periods_in_the_site_settings_and_on_plans(admin_client):
    site_page = admin_client.get("/admin/accounts/sitesettings/", follow=True)  # the list goes to the one row
    assert site_page.status_code == 200
    assert 'name="retention_days"' in site_page.content.decode() and "Empty: kept forever." in site_page.content.decode()
    pro = Plan.objects.get(name="Pro")
    plan_page = admin_client.get(f"/admin/accounts/plan/{pro.pk}/change/")
    assert 'name="retention_days"' in plan_page.content.decode() and "empty: the site settings" in plan_page.content.decode()
    form = {"signup": "open", "run_max_steps": 30, "run_max_seconds": 600, "run_max_tokens": 200000, "run_max_cost": "1.00",
            "approval_expiry_minutes": 1440, "retention_days": "90"}
    saved = admin_client.post("/admin/accounts/sitesettings/1/change/", form)
    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert SiteSettings.current().retention_days == 90
