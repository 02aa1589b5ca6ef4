"""A long conversation opens with its newest page of messages; older pages come by message id."""

import json

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat.models import ChatModel, Conversation, Message
from chat.paging import PAGE_SIZE, PAGE_SIZE_MAX, message_page

pytestmark = pytest.mark.django_db


def long_conversation(owner, count: int) -> tuple[Conversation, list[int]]:
    conversation = Conversation.objects.create(owner=owner, model=ChatModel.objects.get(name="parley-demo"))
    Message.objects.bulk_create(
        Message(conversation=conversation, role="user" if index % 2 == 0 else "assistant", content=f"message {index}")
        for index in range(count)
    )
    return conversation, list(conversation.messages.order_by("id").values_list("id", flat=True))


def detail(client: Client, conversation: Conversation, query: str = "") -> dict:
    response = client.get(f"/api/conversations/{conversation.pk}/{query}")
    assert response.status_code == 200, response.content
    return response.json()


def assert_invalid(response) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error == {"code": "invalid_input", "text": error["text"], "retry_after": None} and error["text"]


def test_the_detail_holds_the_newest_page_oldest_first(alice_client, alice):
    conversation, ids = long_conversation(alice, 120)
    body = detail(alice_client, conversation)
    assert [m["id"] for m in body["messages"]] == ids[-PAGE_SIZE:]
    assert body["messages"][0]["content"] == "message 70" and body["messages"][-1]["content"] == "message 119"
    assert body["has_more"] is True
    assert body["older"] == f"/api/conversations/{conversation.pk}/?before={ids[-PAGE_SIZE]}"
    assert {"id", "title", "model", "system_prompt", "created", "updated", "archived"} <= set(body)


def test_older_pages_follow_by_id_until_the_start(alice_client, alice):
    conversation, ids = long_conversation(alice, 120)
    seen, url = [], f"/api/conversations/{conversation.pk}/"
    while url:
        body = alice_client.get(url).json()
        seen[:0] = [m["id"] for m in body["messages"]]
        url = body["older"]
        assert body["has_more"] is (url is not None)
    assert seen == ids  # every message once, in order
    assert [m["content"] for m in body["messages"]] == [f"message {index}" for index in range(20)]


def test_a_short_conversation_has_nothing_older(alice_client, alice):
    conversation, ids = long_conversation(alice, 3)
    body = detail(alice_client, conversation)
    assert [m["id"] for m in body["messages"]] == ids and body["has_more"] is False and body["older"] is None
    exactly_one_page, _ = long_conversation(alice, PAGE_SIZE)
    assert detail(alice_client, exactly_one_page)["has_more"] is False
    assert detail(alice_client, conversation, f"?before={ids[0]}")["messages"] == []


def test_limit_sets_the_page_size_from_one_to_two_hundred(alice_client, alice):
    conversation, ids = long_conversation(alice, 250)
    one = detail(alice_client, conversation, "?limit=1")
    assert [m["id"] for m in one["messages"]] == ids[-1:]
    assert one["older"] == f"/api/conversations/{conversation.pk}/?before={ids[-1]}&limit=1"
    most = detail(alice_client, conversation, f"?limit={PAGE_SIZE_MAX}&before={ids[-10]}")
    assert [m["id"] for m in most["messages"]] == ids[-10 - PAGE_SIZE_MAX:-10] and most["has_more"] is True
    for bad in ("0", str(PAGE_SIZE_MAX + 1), "-1", "1.5", "", "ten", " 5", "５", "5&limit=6"):
        assert_invalid(alice_client.get(f"/api/conversations/{conversation.pk}/?limit={bad}"))


def test_before_is_a_message_id_in_ascii_digits(alice_client, alice):
    conversation, ids = long_conversation(alice, 5)
    for bad in ("abc", "", "0", "-3", " 3", "3 ", "1_2", "１２", "²", "9" * 20, "3&before=4"):
        assert_invalid(alice_client.get(f"/api/conversations/{conversation.pk}/?before={bad}"))
    # Any id is a bound, even one past the newest or of another conversation: nothing is revealed by it.
    assert [m["id"] for m in detail(alice_client, conversation, "?before=9223372036854775807")["messages"]] == ids


def test_a_patch_with_a_bad_page_changes_nothing(alice_client, alice):
    conversation, _ = long_conversation(alice, 3)
    url = f"/api/conversations/{conversation.pk}/?limit=0"
    assert_invalid(alice_client.patch(url, json.dumps({"title": "Renamed"}), content_type="application/json"))
    conversation.refresh_from_db()
    assert conversation.title == ""
    patched = alice_client.patch(f"/api/conversations/{conversation.pk}/?limit=2", json.dumps({"title": "Renamed"}),
                                 content_type="application/json").json()
    assert patched["title"] == "Renamed" and len(patched["messages"]) == 2 and patched["has_more"] is True


def test_another_users_conversation_is_not_found_whatever_the_page(alice_client, bob):
    theirs, ids = long_conversation(bob, 60)
    for query in ("", f"?before={ids[-1]}", "?limit=5", "?before=abc"):
        response = alice_client.get(f"/api/conversations/{theirs.pk}/{query}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        assert b"message" not in response.content
    assert alice_client.get("/api/conversations/999999/?before=5").json()["error"]["code"] == "not_found"


def test_a_page_costs_the_same_queries_however_long_the_conversation(alice_client, alice):
    short, _ = long_conversation(alice, 10)
    long, ids = long_conversation(alice, 600)
    counts = []
    for conversation, query in ((short, ""), (long, ""), (long, f"?before={ids[100]}")):
        with CaptureQueriesContext(connection) as queries:
            detail(alice_client, conversation, query)
        counts.append(len(queries))
        pages = [q["sql"] for q in queries.captured_queries if 'FROM "chat_message" ' in q["sql"]]
        assert len(pages) == 1 and "LIMIT 51" in pages[0] and "OFFSET" not in pages[0]
        files = [q["sql"] for q in queries.captured_queries if '"chat_message_attachments"' in q["sql"]]
        assert len(files) == 1  # the page's files, in one query
    assert counts[0] == counts[1] == counts[2], counts


def test_the_page_query_reads_the_conversation_index_in_id_order(alice):
    conversation, ids = long_conversation(alice, 300)
    query = Message.objects.filter(conversation=conversation, id__lt=ids[-1]).order_by("-id")[:51]
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # a test table is small enough for a scan: ask for the plan at size
                cursor.execute("SET LOCAL enable_seqscan = off")
        plan = query.explain()
    assert "chat_message_conversation" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan  # rows come in id order: no sort
    assert [m.pk for m in message_page(conversation, ids[-1], 50).messages] == ids[-51:-1]


# The chat page


def page_messages(html: str) -> list[dict]:
    return json.loads(html.split('id="chat-messages" type="application/json">')[1].split("</script>")[0])


def test_the_chat_page_draws_only_the_newest_page_and_offers_earlier_ones(alice_client, alice):
    conversation, ids = long_conversation(alice, 120)
    html = alice_client.get(reverse("chat:conversation", args=[conversation.pk])).content.decode()
    assert [m["id"] for m in page_messages(html)] == ids[-PAGE_SIZE:]
    earlier = reverse("chat:earlier", args=[conversation.pk])
    assert f'hx-get="{earlier}?before={ids[-PAGE_SIZE]}"' in html and "Load earlier messages" in html
    short, _ = long_conversation(alice, 2)
    html = alice_client.get(reverse("chat:conversation", args=[short.pk])).content.decode()
    assert "load-earlier" not in html and 'id="earlier" hidden' in html


def test_the_earlier_partial_carries_the_page_before_and_the_next_button(alice_client, alice):
    conversation, ids = long_conversation(alice, 120)
    url = reverse("chat:earlier", args=[conversation.pk])
    html = alice_client.get(f"{url}?before={ids[-PAGE_SIZE]}", HTTP_HX_REQUEST="true").content.decode()
    assert html.lstrip().startswith('<div class="earlier" id="earlier">') and "<html" not in html
    data = json.loads(html.split('<script type="application/json">')[1].split("</script>")[0])
    assert [m["id"] for m in data] == ids[-2 * PAGE_SIZE:-PAGE_SIZE]
    assert f'hx-get="{url}?before={ids[-2 * PAGE_SIZE]}"' in html
    last = alice_client.get(f"{url}?before={ids[-2 * PAGE_SIZE]}").content.decode()
    assert [m["id"] for m in json.loads(last.split('<script type="application/json">')[1].split("</script>")[0])] == ids[:20]
    assert "load-earlier" not in last


def test_the_earlier_partial_refuses_bad_input_and_other_users(alice_client, alice, bob):
    conversation, ids = long_conversation(alice, 60)
    url = reverse("chat:earlier", args=[conversation.pk])
    for query in ("", "?before=x", "?before=%EF%BC%91", "?before=5&limit=500"):
        assert alice_client.get(url + query).status_code == 400, query
    theirs, their_ids = long_conversation(bob, 60)
    response = alice_client.get(f"{reverse('chat:earlier', args=[theirs.pk])}?before={their_ids[-1]}")
    assert response.status_code == 404 and b"message 1" not in response.content
    assert Client().get(f"{url}?before={ids[-1]}").status_code == 302  # to the login page
