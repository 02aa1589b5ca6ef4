"""The AI SDK door over real HTTP: who may call it (token, session, origins, CORS), its refusals
before a stream starts, whose conversation a chat id reaches, and what is stored."""

import json
import time

import httpx
import pytest
from django.test import Client

from accounts.models import ApiToken, Plan
from billing.models import UsageRecord
from chat.models import ChatModel, Conversation, Message, Source

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

PAGE = "https://app.example.com"


def body(chat_id: str = "c1", text: str = "hello /words 3", **extra) -> dict:
    return {"id": chat_id, "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}],
            "trigger": "submit-message", **extra}


def bearer(raw: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}", **headers}


def post(url: str, data: object, headers: dict[str, str] | None = None) -> httpx.Response:
    """The whole answer: a stream is read to its end."""
    content = data if isinstance(data, bytes) else json.dumps(data).encode()
    return httpx.post(f"{url}/api/ai-sdk/chat", content=content, headers={"content-type": "application/json", **(headers or {})}, timeout=30)


def chunks(response: httpx.Response) -> list[dict | str]:
    out: list[dict | str] = []
    for line in response.text.split("\n\n"):
        if line.startswith("data: "):
            payload = line.removeprefix("data: ")
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def session_cookie(user) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}


@pytest.fixture
def token(alice) -> str:
    return ApiToken.issue(alice, "ai sdk", scopes=[ApiToken.Scope.GATEWAY], allowed_origins=PAGE)[1]


def test_a_stream_has_the_protocol_header_and_ends_with_done(live_app, alice, token):
    response = post(live_app.url, body(), bearer(token))
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    read = chunks(response)
    reply = Message.objects.get(conversation__external_id="c1", role="assistant")
    assert read[0] == {"type": "start", "messageId": str(reply.pk),
                       "messageMetadata": {"conversation": reply.conversation_id, "message": reply.pk}}
    assert read[-1] == "[DONE]"
    assert "".join(c["delta"] for c in read if isinstance(c, dict) and c["type"] == "text-delta") == reply.content


def test_without_credentials_it_is_401(live_app):
    response = post(live_app.url, body())
    assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"
    assert post(live_app.url, body(), bearer("pt_unknown")).status_code == 401


def test_a_token_without_the_gateway_scope_is_403(live_app, alice):
    raw = ApiToken.issue(alice, "chat only", scopes=[ApiToken.Scope.CHAT])[1]
    response = post(live_app.url, body(), bearer(raw))
    assert response.status_code == 403 and response.json()["error"]["code"] == "insufficient_scope"


def test_a_revoked_token_is_refused_at_once(live_app, alice):
    token, raw = ApiToken.issue(alice, "soon gone", scopes=[ApiToken.Scope.GATEWAY])
    assert post(live_app.url, body(), bearer(raw)).status_code == 200
    token.revoke()
    assert post(live_app.url, body(), bearer(raw)).status_code == 401


def test_a_signed_in_page_of_the_site_may_post(live_app, alice):
    headers = session_cookie(alice) | {"Origin": live_app.url, "Sec-Fetch-Site": "same-origin"}
    response = post(live_app.url, body("page"), headers)
    assert response.status_code == 200, response.text
    assert Conversation.objects.get(external_id="page").owner == alice


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://evil.example"},
    {"Sec-Fetch-Site": "same-site"},
    {},  # a cookie POST that names no origin at all
])
def test_a_cookie_post_from_elsewhere_is_refused(live_app, alice, headers):
    response = post(live_app.url, body("csrf"), session_cookie(alice) | headers)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert "access-control-allow-origin" not in response.headers
    assert not Conversation.objects.filter(external_id="csrf").exists()


def test_a_token_page_on_a_listed_origin_gets_cors(live_app, alice, token):
    response = post(live_app.url, body(), bearer(token, Origin=PAGE))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == PAGE
    assert "access-control-allow-credentials" not in response.headers
    assert "x-vercel-ai-ui-message-stream" in response.headers["access-control-expose-headers"]


def test_a_page_of_a_listed_origin_can_read_why_its_token_is_refused(live_app, alice, token):
    response = post(live_app.url, body(), bearer("prl_revoked-or-unknown", Origin=PAGE))
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == PAGE
    stranger = post(live_app.url, body(), bearer("prl_revoked-or-unknown", Origin="https://other.example.com"))
    assert stranger.status_code == 401 and "access-control-allow-origin" not in stranger.headers


def test_a_token_page_on_an_unlisted_origin_is_refused(live_app, alice, token):
    response = post(live_app.url, body("elsewhere"), bearer(token, Origin="https://other.example.com"))
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    assert not Conversation.objects.filter(external_id="elsewhere").exists()


def test_the_preflight_answers_a_listed_origin_only(live_app, alice, token):
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
    allowed = httpx.options(f"{live_app.url}/api/ai-sdk/chat", headers={"Origin": PAGE, **ask})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == PAGE
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers
    other = httpx.options(f"{live_app.url}/api/ai-sdk/chat", headers={"Origin": "https://other.example.com", **ask})
    assert "access-control-allow-origin" not in other.headers
    resume = httpx.options(f"{live_app.url}/api/ai-sdk/chat/c1/stream", headers={"Origin": PAGE, **ask})
    assert resume.headers["access-control-allow-origin"] == PAGE and "GET" in resume.headers["access-control-allow-methods"]


@pytest.mark.parametrize(("data", "words"), [
    ({"messages": body()["messages"], "trigger": "submit-message"}, "id"),
    (body(messages=[]), "user message"),
    (body(messages=[{"id": "a", "role": "assistant", "parts": [{"type": "text", "text": "hi"}]}]), "user message"),
    (body(messages=[{"id": "u", "role": "user", "parts": [{"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,AA=="}]}]), "File parts"),
    (body(messages=[{"id": "u", "role": "user", "parts": [{"type": "data-x", "data": 1}]}]), "text parts"),
    (body(trigger="resume-stream"), "trigger"),
    (body(id=""), "id"),
    (body(id="x" * 201), "200"),
    (body(text="  "), "empty"),
    ([1, 2], "JSON object"),
])
def test_a_malformed_body_is_400(live_app, alice, token, data, words):
    response = post(live_app.url, data, bearer(token))
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["text"]
    assert not Conversation.objects.filter(source=Source.AI_SDK).exists()


def test_invalid_json_is_400(live_app, alice, token):
    response = post(live_app.url, b"{not json", bearer(token))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_an_unknown_model_is_refused(live_app, alice, token):
    response = post(live_app.url, body("m", model="no-such-model"), bearer(token))
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_model"
    assert not Conversation.objects.filter(external_id="m").exists()


def test_past_the_plan_limit_it_is_429_with_retry_after(live_app, alice, token):
    Plan.objects.filter(name="Free").update(requests_per_minute=1)
    assert post(live_app.url, body("limited"), bearer(token)).status_code == 200
    refused = post(live_app.url, body("limited-2"), bearer(token, Origin=PAGE))
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["limit"]["name"] == "requests_per_minute"
    assert refused.headers["access-control-allow-origin"] == PAGE  # the page can read why
    assert not Conversation.objects.filter(external_id="limited-2").exists()  # no empty chat left behind


def test_a_chat_id_reaches_only_its_owners_conversation(live_app, alice, bob, token):
    bobs = ApiToken.issue(bob, "bob", scopes=[ApiToken.Scope.GATEWAY])[1]
    long_reply = post_started(live_app.url, body("shared", text="mine /words 300 /slow 20"), token)
    # bob's same chat id is bob's own chat: he cannot resume, regenerate or continue alice's
    assert httpx.get(f"{live_app.url}/api/ai-sdk/chat/shared/stream", headers=bearer(bobs)).status_code == 204
    regenerate = post(live_app.url, body("shared", trigger="regenerate-message"), bearer(bobs))
    assert regenerate.status_code == 404
    assert post(live_app.url, body("shared", text="bob's /words 2"), bearer(bobs)).status_code == 200
    alices = Conversation.objects.get(owner=alice, external_id="shared")
    bobs_own = Conversation.objects.get(owner=bob, external_id="shared")
    assert alices.pk != bobs_own.pk
    assert list(alices.messages.filter(role="user").values_list("content", flat=True)) == ["mine /words 300 /slow 20"]
    assert list(bobs_own.messages.filter(role="user").values_list("content", flat=True)) == ["bob's /words 2"]
    stop(live_app.url, alice, long_reply)


def stop(url: str, user, reply_id: object) -> None:
    """The chat's own Stop (`POST /api/messages/<id>/stop`), as a script with a chat token sends it."""
    raw = ApiToken.issue(user, "stop", scopes=[ApiToken.Scope.CHAT])[1]
    response = httpx.post(f"{url}/api/messages/{reply_id}/stop", headers=bearer(raw))
    assert response.status_code == 202, response.text


def post_started(url: str, data: dict, token: str) -> int:
    """Starts a reply and leaves it running: the stream is read only to its `start`."""
    with httpx.stream("POST", f"{url}/api/ai-sdk/chat", json=data, headers=bearer(token), timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                return int(json.loads(line.removeprefix("data: "))["messageId"])
    raise AssertionError("no start chunk")


def test_a_dropped_connection_leaves_the_reply_running(live_app, alice, token):
    reply_id = post_started(live_app.url, body("durable", text="go /words 60 /slow 10"), token)
    deadline = time.monotonic() + 30
    while Message.objects.get(pk=reply_id).status in Message.ACTIVE and time.monotonic() < deadline:
        time.sleep(0.2)
    reply = Message.objects.get(pk=reply_id)
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == " ".join(f"word{n}" for n in range(1, 61))


def test_a_busy_chat_refuses_a_second_send(live_app, alice, token):
    reply_id = post_started(live_app.url, body("busy", text="long /words 300 /slow 20"), token)
    response = post(live_app.url, body("busy", text="again"), bearer(token))
    assert response.status_code == 409 and response.json()["error"]["code"] == "conversation_busy"
    stop(live_app.url, alice, reply_id)


def test_a_stop_reaches_the_reader_as_an_abort(live_app, alice, token):
    read: list = []
    with httpx.stream("POST", f"{live_app.url}/api/ai-sdk/chat", json=body("stopped", text="long /words 300 /slow 20"),
                      headers=bearer(token), timeout=30) as response:
        lines = (line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: "))
        for payload in lines:
            read.append(json.loads(payload))
            if read[-1]["type"] == "text-delta":
                break
        stop(live_app.url, alice, read[0]["messageId"])
        read += [payload if payload == "[DONE]" else json.loads(payload) for payload in lines]
    assert read[-1] == "[DONE]"
    assert [c["type"] for c in read[-4:-1]] == ["text-end", "finish-step", "abort"]
    reply = Message.objects.get(pk=int(read[0]["messageId"]))
    assert reply.status == Message.Status.STOPPED
    assert "".join(c["delta"] for c in read if isinstance(c, dict) and c["type"] == "text-delta") == reply.content


def test_a_page_elsewhere_stops_its_chat_with_its_token_and_nobody_elses(live_app, alice, bob, token):
    read: list = []
    url = f"{live_app.url}/api/ai-sdk/chat/elsewhere/stop"
    with httpx.stream("POST", f"{live_app.url}/api/ai-sdk/chat", json=body("elsewhere", text="long /words 300 /slow 20"),
                      headers=bearer(token, Origin=PAGE), timeout=30) as response:
        lines = (line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: "))
        for payload in lines:
            read.append(json.loads(payload))
            if read[-1]["type"] == "text-delta":
                break
        bobs = ApiToken.issue(bob, "bob", scopes=[ApiToken.Scope.GATEWAY])[1]
        assert httpx.post(url, headers=bearer(bobs)).status_code == 204  # bob has no such chat running
        preflight = httpx.options(url, headers={"Origin": PAGE, "Access-Control-Request-Method": "POST"})
        assert preflight.headers["Access-Control-Allow-Origin"] == PAGE and "POST" in preflight.headers["Access-Control-Allow-Methods"]
        stopped = httpx.post(url, headers=bearer(token, Origin=PAGE))
        assert stopped.status_code == 202 and stopped.headers["Access-Control-Allow-Origin"] == PAGE
        assert stopped.json()["message"] == int(read[0]["messageId"])
        read += [payload if payload == "[DONE]" else json.loads(payload) for payload in lines]
    assert [c["type"] for c in read[-4:-1]] == ["text-end", "finish-step", "abort"]
    assert Message.objects.get(pk=int(read[0]["messageId"])).status == Message.Status.STOPPED
    assert httpx.post(url, headers=bearer(token)).status_code == 204  # nothing runs any more


def test_ai_sdk_chats_stay_out_of_the_chat_pages_list(live_app, alice, token):
    assert post(live_app.url, body("hidden"), bearer(token)).status_code == 200
    listed = httpx.get(f"{live_app.url}/api/conversations/", headers=session_cookie(alice)).json()
    assert [c for c in listed["results"] if c["id"] == Conversation.objects.get(external_id="hidden").pk] == []


def test_other_methods_are_405(live_app, alice, token):
    assert httpx.get(f"{live_app.url}/api/ai-sdk/chat", headers=bearer(token)).status_code == 405
    assert httpx.post(f"{live_app.url}/api/ai-sdk/chat/x/stream", headers=bearer(token)).status_code == 405


def test_a_signed_in_page_may_resume_but_not_from_another_site(live_app, alice):
    url = f"{live_app.url}/api/ai-sdk/chat/nothing/stream"
    assert httpx.get(url, headers=session_cookie(alice) | {"Sec-Fetch-Site": "same-origin"}).status_code == 204
    refused = httpx.get(url, headers=session_cookie(alice) | {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert httpx.get(url).status_code == 401


def test_a_regenerate_writes_a_new_version_of_the_last_reply(live_app, alice, token):
    first = chunks(post(live_app.url, body("again", text="q /words 4"), bearer(token)))[0]["messageId"]
    response = post(live_app.url, body("again", trigger="regenerate-message"), bearer(token))
    second = chunks(response)[0]["messageId"]
    conversation = Conversation.objects.get(external_id="again")
    old, new = Message.objects.get(pk=int(first)), Message.objects.get(pk=int(second))
    assert old.pk != new.pk and old.parent_id == new.parent_id
    assert conversation.current_leaf_id == new.pk and new.content == "word1 word2 word3 word4"
    assert conversation.messages.filter(role="user").count() == 1


def test_the_body_may_name_the_model_and_the_plan_decides(live_app, alice, token):
    other = ChatModel.objects.create(name="only-this", label="Only this", provider="demo")
    Plan.objects.get(name="Free").allowed_models.add(other)
    refused = post(live_app.url, body("models"), bearer(token))  # the default model is not in the plan
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert post(live_app.url, body("models", model="only-this"), bearer(token)).status_code == 200
    reply = Message.objects.get(conversation__external_id="models", role="assistant")
    assert reply.model == "only-this" and reply.conversation.model == other


def test_a_reply_is_billed_in_the_ledger_like_the_chats(live_app, alice, token):
    start = chunks(post(live_app.url, body("billed", text="pay /words 12"), bearer(token)))[0]
    deadline = time.monotonic() + 10
    while not UsageRecord.objects.filter(message_id=int(start["messageId"])).exists():
        assert time.monotonic() < deadline, "no ledger row for the reply"
        time.sleep(0.1)
    record = UsageRecord.objects.get(message_id=int(start["messageId"]))
    assert (record.user, record.kind, record.conversation_id) == (alice, UsageRecord.Kind.REPLY, start["messageMetadata"]["conversation"])
    assert record.completion_tokens > 0
