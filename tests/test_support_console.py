"""The support console: who reaches it (anonymous, user, support, admin), what it shows (masked),
what it records, and that it changes nothing of the user's."""

import csv
import io
import json

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group
from django.test import Client

from accounts.models import Plan
from agents.models import AgentRun, AgentStep
from chat.actions import create_conversation
from chat.models import Conversation, Message
from support import listing
from support.models import SUPPORT_GROUP, AuditEvent, Feedback, Flag, Note

pytestmark = pytest.mark.django_db

SECRET_MAIL = "carol.jones@example.org"


@pytest.fixture
def conversation(alice) -> Conversation:
    conversation = create_conversation(alice, title=f"Refund for {SECRET_MAIL}")
    Message.objects.create(conversation=conversation, role="user", content=f"My address is {SECRET_MAIL}, refund please")
    Message.objects.create(
        conversation=conversation, role="assistant", content="**Sure**, refunds take 5 days.", model="parley-demo",
        provider="demo", prompt_tokens=12, completion_tokens=7, cost_usd="0.000123", ttft_ms=140, duration_ms=900,
        limits={"plan": "Free", "requests_per_minute": 20},
    )
    Message.objects.create(
        conversation=conversation, role="assistant", content="partial", model="parley-demo", provider="demo",
        status=Message.Status.FAILED, error_code="rate_limited", error_text="The provider is busy; try again.",
    )
    return conversation


@pytest.fixture
def support_user(django_user_model):
    user = django_user_model.objects.create_user("sam", password="sam-password-123")
    user.groups.add(Group.objects.get(name=SUPPORT_GROUP))
    return user


@pytest.fixture
def support_client(support_user) -> Client:
    client = Client()
    client.force_login(support_user)
    return client


@pytest.fixture
def admin_client_(django_user_model) -> Client:
    admin = django_user_model.objects.create_superuser("root", password="root-password-123")
    client = Client()
    client.force_login(admin)
    return client


def urls(conversation: Conversation, message: Message) -> list[tuple[str, str]]:
    base = f"/support/c/{conversation.pk}"
    return [
        ("get", "/support/"),
        ("get", "/support/?q=refund"),
        ("get", "/support/export.csv"),
        ("get", f"{base}/"),
        ("get", f"{base}/export.md"),
        ("get", f"{base}/export.json"),
        ("post", f"{base}/messages/{message.pk}/reveal"),
        ("post", f"{base}/flags"),
        ("post", f"{base}/notes"),
        ("post", f"{base}/flags/1/clear"),
        ("post", "/support/export.csv"),
        ("post", f"{base}/export.json"),
        ("get", "/api/support/conversations/"),
        ("get", f"/api/support/conversations/{conversation.pk}/"),
    ]


@pytest.mark.parametrize("persona", ["anonymous", "user"])
def test_nobody_but_support_learns_the_console_exists(persona, conversation, alice_client):
    client = Client() if persona == "anonymous" else alice_client
    message = conversation.messages.first()
    for method, url in urls(conversation, message):
        response = getattr(client, method)(url, {"reason": "looking around", "text": "hi"} if method == "post" else None)
        # The site's own 404: no log-in redirect, no 403 that would reveal the console.
        assert response.status_code == 404, (url, response.status_code)
    assert not AuditEvent.objects.exists()
    assert not Flag.objects.exists() and not Note.objects.exists()


def test_the_support_group_is_made_by_a_migration_with_only_console_permissions():
    group = Group.objects.get(name=SUPPORT_GROUP)
    codenames = set(group.permissions.values_list("content_type__app_label", "codename"))
    assert ("support", "view_transcripts") in codenames
    assert ("support", "reveal_personal_data") in codenames
    assert {app for app, _ in codenames} == {"support"}


def test_support_staff_cannot_reach_the_rest_of_admin_nor_change_a_conversation(support_client, conversation):
    assert support_client.get("/admin/").status_code == 302  # the admin's log-in: not staff
    assert support_client.get("/admin/accounts/apitoken/").status_code == 302
    # The console has no door that changes the user's data; the user's own doors refuse support.
    response = support_client.patch(f"/api/conversations/{conversation.pk}/", json.dumps({"title": "x"}), content_type="application/json")
    assert response.status_code == 404
    assert support_client.get(f"/api/conversations/{conversation.pk}/").status_code == 404
    response = support_client.delete(f"/api/conversations/{conversation.pk}/")
    assert response.status_code == 404
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_the_list_masks_titles_and_records_the_look(support_client, conversation, support_user):
    response = support_client.get("/support/")
    assert response.status_code == 200
    page = response.content.decode()
    assert f"/support/c/{conversation.pk}/" in page
    assert SECRET_MAIL not in page
    assert "Refund for [email]" in page
    assert response["Cache-Control"] == "no-store"
    event = AuditEvent.objects.get()
    assert event.action == "list" and event.actor_id == support_user.pk and event.conversations == [conversation.pk]


def test_the_transcript_shows_metadata_masked_and_records_the_view(support_client, conversation, support_user):
    response = support_client.get(f"/support/c/{conversation.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert SECRET_MAIL not in page
    assert "My address is [email], refund please" in page
    for shown in ("demo/parley-demo", "12 in, 7 out", "$0.000123", "140 ms", "900 ms", "plan Free · 20 requests a minute",
                  "rate_limited", "The provider is busy; try again."):
        assert shown in page, shown
    event = AuditEvent.objects.get()
    assert (event.action, event.conversations, event.actor_name) == ("view", [conversation.pk], "sam")


def test_a_reveal_needs_a_reason_shows_one_message_and_is_recorded(support_client, conversation):
    user_message = conversation.messages.get(role="user")
    url = f"/support/c/{conversation.pk}/messages/{user_message.pk}/reveal"
    refused = support_client.post(url, {"reason": " "})
    assert refused.status_code == 422
    assert SECRET_MAIL not in refused.content.decode()
    assert not AuditEvent.objects.filter(action="reveal").exists()
    shown = support_client.post(url, {"reason": "Customer asked us to check their address"})
    assert shown.status_code == 200 and shown["Cache-Control"] == "no-store"
    assert SECRET_MAIL in shown.content.decode()
    event = AuditEvent.objects.get(action="reveal")
    assert event.reason == "Customer asked us to check their address"
    assert event.detail == {"message": user_message.pk}
    # For that page view only: the next view is masked again.
    assert SECRET_MAIL not in support_client.get(f"/support/c/{conversation.pk}/").content.decode()


def test_a_message_of_another_conversation_cannot_be_revealed_through_this_one(support_client, conversation, bob):
    other = create_conversation(bob, title="Other")
    message = Message.objects.create(conversation=other, role="user", content=f"mine: {SECRET_MAIL}")
    response = support_client.post(f"/support/c/{conversation.pk}/messages/{message.pk}/reveal", {"reason": "checking things"})
    assert response.status_code == 404


def test_reveal_needs_its_own_permission(django_user_model, conversation):
    from django.contrib.auth.models import Permission

    reader = django_user_model.objects.create_user("reader", password="reader-password-123")
    reader.user_permissions.add(Permission.objects.get(codename="view_transcripts"))
    client = Client()
    client.force_login(reader)
    assert client.get(f"/support/c/{conversation.pk}/").status_code == 200
    message = conversation.messages.get(role="user")
    response = client.post(f"/support/c/{conversation.pk}/messages/{message.pk}/reveal", {"reason": "just curious now"})
    assert response.status_code == 404
    assert client.get(f"/support/c/{conversation.pk}/export.md").status_code == 404


def test_flags_and_notes_are_support_only_and_name_their_author(support_client, conversation, alice_client):
    reply = conversation.messages.filter(role="assistant").first()
    assert support_client.post(f"/support/c/{conversation.pk}/flags", {"reason": "x"}).status_code == 302
    assert not Flag.objects.exists()  # too short: refused, said on the page
    support_client.post(f"/support/c/{conversation.pk}/flags", {"reason": "Wrong refund policy", "message": reply.pk})
    support_client.post(f"/support/c/{conversation.pk}/flags", {"reason": "Whole chat needs review"})
    support_client.post(f"/support/c/{conversation.pk}/notes", {"text": "Called the customer back."})
    flag = Flag.objects.get(message=reply)
    assert flag.author_name == "sam" and flag.reason == "Wrong refund policy"
    note = Note.objects.get()
    assert note.author_name == "sam"
    page = support_client.get(f"/support/c/{conversation.pk}/").content.decode()
    assert "Wrong refund policy" in page and "Called the customer back." in page and "Whole chat needs review" in page
    # The user sees neither, on the page or in the API.
    for url in (f"/c/{conversation.pk}/", f"/api/conversations/{conversation.pk}/"):
        body = alice_client.get(url).content.decode()
        assert "Wrong refund policy" not in body and "Called the customer back" not in body
    # Cleared flags stay on record.
    whole = Flag.objects.get(message=None)
    support_client.post(f"/support/c/{conversation.pk}/flags/{whole.pk}/clear")
    whole.refresh_from_db()
    assert whole.cleared_at is not None and whole.cleared_by == "sam"
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["flag", "flag", "note", "view", "flag"]


def test_a_flag_on_a_message_of_another_conversation_is_refused(support_client, conversation, bob):
    other = create_conversation(bob, title="Other")
    message = Message.objects.create(conversation=other, role="user", content="hi")
    support_client.post(f"/support/c/{conversation.pk}/flags", {"reason": "Wrong one here", "message": message.pk})
    assert not Flag.objects.exists()


def make_rows(owner, count: int) -> list[Conversation]:
    return [create_conversation(owner, title=f"c{index}") for index in range(count)]


def test_keyset_pages_visit_every_row_once_in_order(alice):
    made = make_rows(alice, 7)
    for index, row in enumerate(made):  # ties on the sort column: the id breaks them
        Conversation.objects.filter(pk=row.pk).update(updated=made[index // 3].created)
    seen, after = [], None
    while True:
        page = listing.page(listing.Filters(), after, size=3)
        seen += [row.pk for row in page.rows]
        if page.next is None:
            break
        after = listing.Cursor.decode(page.next.encode())
    expected = list(Conversation.objects.order_by("-updated", "-id").values_list("pk", flat=True))
    assert seen == expected and len(seen) == 7


def test_filters(alice, bob, conversation, support_client):
    plan = Plan.objects.create(name="Gold")
    bob.plan = plan
    bob.save()
    bobs = create_conversation(bob, title="Bob's chat")
    Feedback.objects.create(message=conversation.messages.filter(role="assistant").first(), conversation=conversation,
                            user=alice, rating=-1, model="parley-demo")
    AgentRun.objects.create(owner=bob, conversation=bobs, goal="do it", model="parley-demo")

    def ids(**params: str) -> set[int]:
        return {row.pk for row in listing.page(listing.parse(params)).rows}

    assert ids(user="bob") == {bobs.pk}
    assert ids(user="ALI") == {conversation.pk}
    assert ids(status="failed") == {conversation.pk}
    assert ids(error_code="rate_limited") == {conversation.pk}
    assert ids(model="parley-demo") == {conversation.pk}
    assert ids(provider="demo") == {conversation.pk}
    assert ids(negative="1") == {conversation.pk}
    assert ids(has_runs="1") == {bobs.pk}
    assert ids(plan=str(plan.pk)) == {bobs.pk}
    assert ids(flagged="1") == set()
    Flag.objects.create(conversation=bobs, reason="look", author_name="sam")
    assert ids(flagged="1") == {bobs.pk}
    assert ids(since="2000-01-01", until="2999-01-01") == {conversation.pk, bobs.pk}
    assert ids(until="2000-01-01") == set()
    for bad in ({"since": "yesterday"}, {"status": "complete"}, {"plan": "gold"}, {"sort": "title"},
                {"since": "2020-02-02", "until": "2020-01-01"}, {"after": "!!!"}):
        response = support_client.get("/support/", bad)
        assert response.status_code == 400, bad
        assert "alert" in response.content.decode()


def test_search_finds_messages_inside_the_filters_masked(support_client, conversation, bob):
    other = create_conversation(bob, title="Bob")
    Message.objects.create(conversation=other, role="user", content="refund for bob too")
    page = support_client.get("/support/", {"q": "refund", "user": "alice"}).content.decode()
    assert f"/support/c/{conversation.pk}/" in page and f"/support/c/{other.pk}/" not in page
    assert SECRET_MAIL not in page
    event = AuditEvent.objects.get()
    assert event.action == "search" and event.query == "q=refund user=alice" and event.conversations == [conversation.pk]


def test_exports_are_masked_unless_a_reason_is_given_and_are_recorded(support_client, conversation):
    masked = support_client.get(f"/support/c/{conversation.pk}/export.md")
    assert masked.status_code == 200 and "attachment" in masked["Content-Disposition"]
    text = masked.content.decode()
    assert SECRET_MAIL not in text and "[email]" in text and "rate_limited" in text
    data = json.loads(support_client.get(f"/support/c/{conversation.pk}/export.json").content)
    assert data["masked"] is True and SECRET_MAIL not in json.dumps(data)
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "assistant"]
    refused = support_client.post(f"/support/c/{conversation.pk}/export.json", {"reason": ""})
    assert refused.status_code == 422
    unmasked = support_client.post(f"/support/c/{conversation.pk}/export.json", {"reason": "Legal hold request 42"})
    assert SECRET_MAIL in unmasked.content.decode()
    events = list(AuditEvent.objects.values_list("action", "reason", "detail"))
    assert events == [
        ("export", "", {"format": "md", "masked": True}),
        ("export", "", {"format": "json", "masked": True}),
        ("export", "Legal hold request 42", {"format": "json", "masked": False}),
    ]
    assert support_client.get(f"/support/c/{conversation.pk}/export.pdf").status_code == 404


async def read_stream(chunks) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def test_the_csv_export_streams_every_filtered_row_masked(support_client, conversation, alice, bob):
    make_rows(alice, 5)
    make_rows(bob, 2)
    Conversation.objects.filter(owner=alice).update(title="=cmd|' /C calc'!A0")
    response = support_client.get("/support/export.csv", {"user": "alice"})
    assert response.status_code == 200 and response.streaming
    body = async_to_sync(read_stream)(response.streaming_content).decode()  # as daphne serves it
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:3] == ["id", "user", "plan"]
    assert len(rows) == 1 + 6 and {row[1] for row in rows[1:]} == {"alice"}
    assert all(row[3].startswith("'=") for row in rows[1:])  # a spreadsheet would run it otherwise
    assert AuditEvent.objects.get().query == "user=alice"


def test_agent_runs_show_their_steps_masked(support_client, conversation, alice):
    run = AgentRun.objects.create(owner=alice, conversation=conversation, goal=f"Email {SECRET_MAIL}", model="parley-demo", status="succeeded")
    AgentStep.objects.create(run=run, index=1, kind="tool", title="Send e-mail", tool="email", status="succeeded",
                             arguments={"to": SECRET_MAIL}, result={"sent": True})
    page = support_client.get(f"/support/c/{conversation.pk}/").content.decode()
    assert "Send e-mail" in page and "Agent runs" in page and SECRET_MAIL not in page
    assert "&quot;to&quot;: &quot;[email]&quot;" in page


def test_admins_reach_every_door_of_the_console(admin_client_, conversation):
    message = conversation.messages.first()
    Flag.objects.create(pk=1, conversation=conversation, reason="seen before", author_name="root")
    for method, url in urls(conversation, message):
        data = {"reason": "Checking the console works", "text": "hi"} if method == "post" else None
        response = getattr(admin_client_, method)(url, data)
        assert response.status_code in {200, 302}, (url, response.status_code)


def test_the_json_api_goes_through_the_same_policy_masking_and_record(support_client, alice_client, conversation, support_user):
    from accounts.models import ApiToken

    listed = support_client.get("/api/support/conversations/")
    assert listed.status_code == 200
    row = listed.json()["conversations"][0]
    assert row["id"] == conversation.pk and row["title"] == "Refund for [email]"
    detail = support_client.get(f"/api/support/conversations/{conversation.pk}/").json()
    assert SECRET_MAIL not in json.dumps(detail) and len(detail["messages"]) == 3
    assert support_client.get("/api/support/conversations/", {"since": "soon"}).status_code == 400
    # Anyone else: the API's own 404.
    for client in (Client(), alice_client):
        response = client.get(f"/api/support/conversations/{conversation.pk}/")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    # A script with the support user's token.
    _, raw = ApiToken.issue(support_user, "console script")
    scripted = Client().get("/api/support/conversations/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert scripted.status_code == 200
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["list", "view", "list"]


def test_search_finds_agent_runs_beside_messages(support_client, alice):
    conversation = create_conversation(alice, title="Research")
    run = AgentRun.objects.create(owner=alice, conversation=conversation, goal="Compare shipping carriers", model="parley-demo")
    AgentStep.objects.create(run=run, index=1, kind="model", title="Thinking", text="The cheapest carrier is Zephyrline.")
    page = support_client.get("/support/", {"q": "zephyrline"}).content.decode()
    assert f"agent run {run.pk}" in page and f"#run-{run.pk}" in page
    assert "<mark>Zephyrline</mark>" in page
    event = AuditEvent.objects.get()
    assert event.conversations == [conversation.pk] and event.detail["run_hits"] == 1


def test_a_user_without_a_plan_shows_the_default_one_and_a_dropped_address_is_named(support_client, conversation):
    default = Plan.default()
    assert default is not None  # seeded by a migration
    assert f"{default.name} (default)" in support_client.get(f"/support/c/{conversation.pk}/").content.decode()
    assert f"{default.name} (default)" in support_client.get("/support/").content.decode()
    page = support_client.get("/support/", {"q": f"refund {SECRET_MAIL} +44 20 7946 0958"}).content.decode()
    assert "an e-mail address and a phone number in the search were left out" in page
    hits = page[page.index('<ol class="hits">'):]
    assert "[email]" in hits and SECRET_MAIL not in hits  # the searcher's own words are echoed, no one else's


def test_the_transcript_says_how_each_reply_was_reached(support_client, alice):
    conversation = create_conversation(alice, title="Outage")
    Message.objects.create(conversation=conversation, role="user", content="Hello")
    Message.objects.create(
        conversation=conversation, role="assistant", content="Hi", model="second", provider="anthropic",
        routing={
            "attempts": [{"attempt": 1, "model": "first", "code": "overloaded", "ms": 12}],
            "failover": {"from": "first", "from_label": "First", "to": "second", "to_label": "Second", "why": "its provider was <b>overloaded</b>"},
        },
    )
    Message.objects.create(conversation=conversation, role="assistant", content="Again", model="second", provider="anthropic",
                           routing={"cached": {"key": "abc", "stored_at": 1}, "requested": "auto", "rule": "Short <i>ones</i>",
                                    "why": "the prompt is short"})
    page = support_client.get(f"/support/c/{conversation.pk}/").content.decode()
    assert "failed over from first to second: its provider was &lt;b&gt;overloaded&lt;/b&gt;" in page
    assert "1 attempt failed before the first token (#1 first overloaded), billed nothing" in page
    assert "replayed from the response cache (no provider call, billed nothing)" in page
    assert "auto chose it by rule “Short &lt;i&gt;ones&lt;/i&gt;”: the prompt is short" in page
