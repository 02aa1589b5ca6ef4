"""Feedback on replies: rated, changed and taken back by their owner only, read back with the
conversation, summed per model for admins."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken
from chat.models import ChatModel, Conversation, Message
from support import feedback
from support.models import COMMENT_MAX, Feedback

pytestmark = pytest.mark.django_db


def conversation_of(user) -> Conversation:
    return Conversation.objects.create(owner=user, model=ChatModel.objects.get(name="parley-demo"))


def turn(conversation: Conversation, status: str = "complete", model: str = "parley-demo") -> tuple[Message, Message]:
    question = Message.objects.create(conversation=conversation, role="user", content="hi")
    reply = Message.objects.create(
        conversation=conversation, role="assistant", content="hello", status=status, model=model, parent=question
    )
    return question, reply


def rate(client: Client, message_id: int, body: object, **extra):
    return client.post(f"/api/messages/{message_id}/feedback", json.dumps(body), content_type="application/json", **extra)


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert set(response.json()) == {"error"} and response.json()["error"]["code"] == code


def test_a_reply_is_rated_with_a_comment_changed_and_cleared(alice_client, alice):
    _, reply = turn(conversation_of(alice))
    response = rate(alice_client, reply.pk, {"rating": "down", "comment": "  Wrong year.  "})
    assert response.status_code == 200, response.content
    given = response.json()["feedback"]
    assert given["rating"] == "down" and given["comment"] == "Wrong year." and given["updated"]
    stored = Feedback.objects.get(message=reply)
    assert (stored.rating, stored.user, stored.conversation_id, stored.model) == (-1, alice, reply.conversation_id, "parley-demo")

    # Switching thumbs keeps the comment unless one is sent.
    switched = rate(alice_client, reply.pk, {"rating": "up"}).json()["feedback"]
    assert switched["rating"] == "up" and switched["comment"] == "Wrong year."
    assert rate(alice_client, reply.pk, {"rating": "up", "comment": ""}).json()["feedback"]["comment"] == ""
    assert Feedback.objects.count() == 1

    assert rate(alice_client, reply.pk, {"rating": None}).json() == {"feedback": None}
    assert not Feedback.objects.exists()
    assert rate(alice_client, reply.pk, {"rating": None}).json() == {"feedback": None}  # clearing twice is fine


def test_a_failed_or_stopped_reply_can_be_rated_but_not_one_being_written(alice_client, alice):
    conversation = conversation_of(alice)
    for status in ("failed", "stopped", "interrupted"):
        _, reply = turn(conversation, status=status)
        assert rate(alice_client, reply.pk, {"rating": "down"}).status_code == 200
    for status in ("queued", "streaming"):
        _, reply = turn(conversation, status=status)
        assert_error(rate(alice_client, reply.pk, {"rating": "up"}), 409, "conversation_busy")
    assert Feedback.objects.count() == 3


def test_a_reply_without_a_model_recorded_counts_for_its_conversations_model(alice_client, alice):
    _, reply = turn(conversation_of(alice), status="failed", model="")
    rate(alice_client, reply.pk, {"rating": "down"})
    assert Feedback.objects.get().model == "parley-demo"


def test_bad_bodies_are_refused_and_change_nothing(alice_client, alice):
    _, reply = turn(conversation_of(alice))
    url = f"/api/messages/{reply.pk}/feedback"
    assert_error(alice_client.post(url, "{nope", content_type="application/json"), 400, "invalid_json")
    assert_error(alice_client.post(url, "rating=up", content_type="text/plain"), 415, "unsupported_media_type")
    assert_error(rate(alice_client, reply.pk, ["up"]), 400, "invalid_input")
    assert_error(rate(alice_client, reply.pk, {}), 400, "invalid_input")
    for value in ("sideways", 1, -1, True, "UP", ""):
        assert_error(rate(alice_client, reply.pk, {"rating": value}), 400, "invalid_input")
    assert_error(rate(alice_client, reply.pk, {"rating": "up", "comment": 5}), 400, "invalid_input")
    assert_error(rate(alice_client, reply.pk, {"rating": "up", "stars": 5}), 400, "invalid_input")
    assert_error(rate(alice_client, reply.pk, {"rating": None, "comment": "meh"}), 400, "invalid_input")
    assert_error(alice_client.get(url), 405, "method_not_allowed")
    assert not Feedback.objects.exists()


def test_a_comment_may_be_as_long_as_the_limit_and_no_longer(alice_client, alice):
    _, reply = turn(conversation_of(alice))
    assert_error(rate(alice_client, reply.pk, {"rating": "down", "comment": "x" * (COMMENT_MAX + 1)}), 400, "invalid_input")
    assert not Feedback.objects.exists()
    # Surrounding spaces do not count against it.
    response = rate(alice_client, reply.pk, {"rating": "down", "comment": f"  {'x' * COMMENT_MAX}  "})
    assert response.status_code == 200 and len(response.json()["feedback"]["comment"]) == COMMENT_MAX


def test_the_users_own_message_cannot_be_rated(alice_client, alice):
    question, _ = turn(conversation_of(alice))
    assert_error(rate(alice_client, question.pk, {"rating": "up"}), 400, "invalid_input")
    assert not Feedback.objects.exists()


def test_another_users_reply_is_not_found_and_keeps_its_rating(alice_client, alice, bob):
    _, reply = turn(conversation_of(bob))
    Feedback.objects.create(message=reply, conversation=reply.conversation, user=bob, rating=1, model="parley-demo")
    for body in ({"rating": "down"}, {"rating": None}):
        assert_error(rate(alice_client, reply.pk, body), 404, "not_found")
    assert_error(rate(alice_client, 999999, {"rating": "up"}), 404, "not_found")
    assert Feedback.objects.get(message=reply).rating == 1


def test_signed_out_and_forged_requests_are_refused(alice, bob):
    _, reply = turn(conversation_of(alice))
    assert_error(rate(Client(), reply.pk, {"rating": "up"}), 401, "not_authenticated")
    forged = Client(enforce_csrf_checks=True)
    forged.force_login(alice)
    assert_error(rate(forged, reply.pk, {"rating": "up"}), 403, "forbidden")
    assert not Feedback.objects.exists()
    # A script's bearer token needs no CSRF token.
    script = Client(headers={"Authorization": f"Bearer {ApiToken.issue(alice, 'script')[1]}"}, enforce_csrf_checks=True)
    assert rate(script, reply.pk, {"rating": "up"}).status_code == 200


def test_the_conversation_carries_each_replys_feedback_in_one_query(alice_client, alice):
    conversation = conversation_of(alice)
    turns = [turn(conversation) for _ in range(3)]
    rate(alice_client, turns[0][1].pk, {"rating": "down", "comment": "Too long."})
    rate(alice_client, turns[2][1].pk, {"rating": "up"})
    with CaptureQueriesContext(connection) as queries:
        body = alice_client.get(f"/api/conversations/{conversation.pk}/").json()
    assert len([q for q in queries.captured_queries if "support_feedback" in q["sql"]]) == 1
    by_id = {message["id"]: message["feedback"] for message in body["messages"]}
    assert by_id[turns[0][1].pk] == {"rating": "down", "comment": "Too long."}
    assert by_id[turns[1][1].pk] is None
    assert by_id[turns[2][1].pk] == {"rating": "up", "comment": ""}
    assert all(by_id[question.pk] is None for question, _ in turns)


def test_the_chat_page_hands_its_replies_feedback_to_the_script(alice_client, alice):
    conversation = conversation_of(alice)
    _, reply = turn(conversation)
    rate(alice_client, reply.pk, {"rating": "down", "comment": "Off topic."})
    page = alice_client.get(reverse("chat:conversation", args=[conversation.pk]))
    assert page.status_code == 200
    messages = json.loads(page.content.split(b'id="chat-messages" type="application/json">')[1].split(b"</script>")[0])
    assert [m["feedback"] for m in messages] == [None, {"rating": "down", "comment": "Off topic."}]


def test_summary_by_model_counts_each_models_ratings(alice, bob):
    conversation = conversation_of(alice)
    ratings = [("parley-demo", "up", "good"), ("parley-demo", "up", ""), ("parley-demo", "down", "bad"),
               ("gpt-x", "down", ""), ("gpt-x", "down", "no")]
    for model, rating, comment in ratings:
        _, reply = turn(conversation, model=model)
        feedback.rate(alice, reply.pk, feedback.parse_rating(rating), comment)
    rows = {row.model: row for row in feedback.summary_by_model()}
    assert list(rows) == ["parley-demo", "gpt-x"]  # most rated first
    demo, other = rows["parley-demo"], rows["gpt-x"]
    assert (demo.up, demo.down, demo.total, demo.comments) == (2, 1, 3, 2)
    assert demo.share_up == pytest.approx(2 / 3)
    assert (other.up, other.down, other.total, other.comments, other.share_up) == (0, 2, 2, 1, 0.0)

    Feedback.objects.filter(model="gpt-x").update(updated=timezone.now() - timedelta(days=10))
    recent = feedback.summary_by_model(since=timezone.now() - timedelta(days=1))
    assert [row.model for row in recent] == ["parley-demo"]
    with CaptureQueriesContext(connection) as queries:
        feedback.summary_by_model()
    assert len(queries.captured_queries) == 1


def test_admins_see_the_summary_above_the_ratings(alice, django_user_model):
    _, reply = turn(conversation_of(alice))
    feedback.rate(alice, reply.pk, -1, "Made up a citation.")
    admin = django_user_model.objects.create_superuser("root", password="root-password-123")
    client = Client()
    client.force_login(admin)
    page = client.get("/admin/support/feedback/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Feedback per model" in text and "Made up a citation." in text
    assert "<th scope=\"row\">parley-demo</th>" in text
    assert client.get(f"/admin/support/feedback/{Feedback.objects.get().pk}/change/").status_code == 200
    assert client.get("/admin/support/feedback/add/").status_code == 403


def test_users_and_staff_without_the_permission_do_not_see_feedback(alice, alice_client, django_user_model):
    _, reply = turn(conversation_of(alice))
    feedback.rate(alice, reply.pk, -1, "Made up a citation.")
    page = alice_client.get("/admin/support/feedback/")
    assert page.status_code == 302 and "/login/" in page["Location"]
    staff = django_user_model.objects.create_user("staff", password="staff-password-123", is_staff=True)
    client = Client()
    client.force_login(staff)
    refused = client.get("/admin/support/feedback/")
    assert refused.status_code == 403 and b"Made up a citation." not in refused.content
