"""The AG-UI door's edges over real daphne: who may call it (a gateway token, or a session from the
site's own origin), malformed RunAgentInput refused with a clear 400, a runId never started twice,
and nobody reaching another user's thread, run or approval."""

import json
import uuid

import httpx
import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import ApiToken
from agents.models import AgentRun, AgentStep
from chat.models import Conversation, Source

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

PATH = "/api/ag-ui/agent"


@pytest.fixture
def token(alice) -> str:
    return ApiToken.issue(alice, "ag-ui", scopes=[ApiToken.Scope.GATEWAY])[1]


def run_input(thread: str, goal: str = "Compute 6 * 7", run: str | None = None, **extra) -> dict:
    return {
        "threadId": thread, "runId": run or f"run-{uuid.uuid4()}", "state": {}, "tools": [], "context": [],
        "forwardedProps": {}, "messages": [{"id": "m1", "role": "user", "content": goal}], **extra,
    }


def post(base: str, body, token: str | None = None, headers: dict | None = None, **kwargs) -> httpx.Response:
    sent = {"Authorization": f"Bearer {token}"} if token else {}
    if isinstance(body, bytes):
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    if isinstance(body, bytes):
        return httpx.post(base + PATH, content=body, headers=sent, timeout=60, **kwargs)
    return httpx.post(base + PATH, json=body, headers=sent, timeout=60, **kwargs)


def frames(response: httpx.Response) -> list[tuple[int, dict]]:
    """(id, event) of each SSE frame, read to the end of the stream."""
    out, current = [], {}
    for line in response.text.split("\n"):
        if line == "" and "data" in current:
            out.append((int(current["id"]), json.loads(current["data"])))
            current = {}
        elif line.startswith(("id: ", "data: ")):
            field, _, value = line.partition(": ")
            current[field] = value
    return out


def error_of(response: httpx.Response) -> dict:
    assert response.headers["content-type"] == "application/json", response.text
    return response.json()["error"]


def test_a_call_without_a_gateway_token_or_session_is_refused(live_app, alice):
    chat_only = ApiToken.issue(alice, "chat")[1]
    body = run_input("t1")
    assert post(live_app.url, body).status_code == 401
    assert error_of(post(live_app.url, body))["code"] == "not_authenticated"
    assert error_of(post(live_app.url, body, "prl_not-a-token"))["code"] == "not_authenticated"
    scoped = post(live_app.url, body, chat_only)
    assert scoped.status_code == 403 and error_of(scoped)["code"] == "insufficient_scope"
    assert "gateway scope" in error_of(scoped)["text"]
    assert not Conversation.objects.filter(source=Source.AG_UI).exists()


def test_a_session_may_run_from_the_site_s_own_origin_only(live_app, alice):
    client = Client()
    client.force_login(alice)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    thread = f"thread-{uuid.uuid4()}"
    for origin in (None, "http://evil.example", "http://127.0.0.1:1"):
        refused = post(live_app.url, run_input(thread), headers={"Origin": origin} if origin else {}, cookies=cookies)
        assert refused.status_code == 403 and error_of(refused)["code"] == "forbidden", origin
    assert not AgentRun.objects.exists()
    body = run_input(thread)
    allowed = post(live_app.url, body, headers={"Origin": live_app.url}, cookies=cookies)
    assert allowed.status_code == 200 and allowed.headers["content-type"].startswith("text/event-stream")
    assert [e["type"] for _, e in frames(allowed)][-1] == "RUN_FINISHED"
    conversation = Conversation.objects.get(owner=alice, source=Source.AG_UI, external_id=thread)
    assert conversation.api_token is None and AgentRun.objects.get().conversation == conversation
    # Reading a run back needs no Origin: a GET changes nothing.
    again = httpx.get(f"{live_app.url}{PATH}", params={"threadId": thread, "runId": body["runId"]}, cookies=cookies, timeout=60)
    assert frames(again) == frames(allowed)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "RunAgentInput object"),
        ({"runId": "r", "messages": []}, "threadId"),
        ({"threadId": "t", "runId": "", "messages": []}, "runId"),
        ({"threadId": "t" * 201, "runId": "r", "messages": []}, "threadId"),
        ({"threadId": "t", "runId": "r", "messages": "hello"}, "messages must be a list"),
        ({"threadId": "t", "runId": "r", "messages": [{"role": "user", "content": "x"}]}, "messages[0] needs an id"),
        ({"threadId": "t", "runId": "r", "messages": [{"id": "1", "role": "robot", "content": "x"}]}, "messages[0] needs an id"),
        ({"threadId": "t", "runId": "r", "messages": []}, "must hold a user message"),
        ({"threadId": "t", "runId": "r", "messages": [{"id": "1", "role": "user", "content": "  "}]}, "has no text"),
        ({"threadId": "t", "runId": "r", "messages": [], "tools": {}}, "tools must be a list"),
        ({"threadId": "t", "runId": "r", "messages": [], "forwardedProps": {"model": 3}}, "forwardedProps.model"),
        ({"threadId": "t", "runId": "r", "messages": [], "resume": [{"interruptId": "x", "status": "resolved"}]}, "interruptId"),
        ({"threadId": "t", "runId": "r", "messages": [], "resume": [{"interruptId": "parley-run-1-step-2", "status": "maybe"}]},
         '"resolved" or "cancelled"'),
        ({"threadId": "t", "runId": "r", "messages": [], "resume": [{"interruptId": "parley-run-1-step-2", "status": "resolved",
                                                                    "payload": {"decision": "perhaps"}}]}, "payload"),
    ],
)
def test_a_malformed_run_agent_input_gets_a_clear_400_and_starts_nothing(live_app, token, body, words):
    response = post(live_app.url, body, token)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] in {"invalid_input", "invalid_json"} and words in error["text"], error
    assert not AgentRun.objects.exists() and not Conversation.objects.filter(source=Source.AG_UI).exists()


def test_other_bad_requests_are_refused_clearly(live_app, token):
    assert post(live_app.url, b'{"a": 1}', token, headers={"Content-Type": "text/plain"}).status_code == 415
    put = httpx.put(live_app.url + PATH, json={}, headers={"Authorization": f"Bearer {token}"})
    assert put.status_code == 405 and error_of(put)["code"] == "method_not_allowed"
    bad_cursor = post(live_app.url, run_input("t"), token, headers={"Last-Event-ID": "twelve"})
    assert bad_cursor.status_code == 400 and "Last-Event-ID" in error_of(bad_cursor)["text"]
    unnamed = httpx.get(live_app.url + PATH, headers={"Authorization": f"Bearer {token}"})
    assert unnamed.status_code == 400 and "threadId" in error_of(unnamed)["text"]
    unknown = httpx.get(live_app.url + PATH, params={"threadId": "nope", "runId": "nope"}, headers={"Authorization": f"Bearer {token}"})
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "not_found"
    too_long = post(live_app.url, run_input("t", goal="x" * 5000), token)
    assert too_long.status_code == 413 and error_of(too_long)["code"] == "message_too_long"
    # A refused start leaves no thread behind, and its runId may be used again.
    assert not Conversation.objects.filter(source=Source.AG_UI).exists()


def test_the_same_run_id_again_replays_that_run_and_never_starts_a_second(live_app, token):
    body = run_input(f"thread-{uuid.uuid4()}")
    first = frames(post(live_app.url, body, token))
    again = frames(post(live_app.url, body, token))
    assert AgentRun.objects.count() == 1
    assert again == first and [n for n, _ in first] == list(range(1, len(first) + 1))
    assert first[-1][1]["type"] == "RUN_FINISHED"
    # From an id on: exactly what came after it.
    tail = frames(post(live_app.url, body, token, headers={"Last-Event-ID": "5"}))
    assert tail == first[5:]
    # A new runId on the same thread is a new run in the same conversation.
    frames(post(live_app.url, run_input(body["threadId"]), token))
    assert AgentRun.objects.count() == 2 and len({r.conversation_id for r in AgentRun.objects.all()}) == 1
    # Once the conversation is deleted, its runs are not found, by the GET or the same POST.
    Conversation.objects.filter(source=Source.AG_UI).delete()
    gone = httpx.get(live_app.url + PATH, params={"threadId": body["threadId"], "runId": body["runId"]},
                     headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 404 and post(live_app.url, body, token).status_code == 404


def test_nobody_reaches_another_user_s_thread_run_or_approval(live_app, token, alice, bob):
    alice.user_permissions.add(Permission.objects.get(codename="use_email_tool"))
    theirs = ApiToken.issue(bob, "bob", scopes=[ApiToken.Scope.GATEWAY])[1]
    body = run_input(f"thread-{uuid.uuid4()}", goal="Report on parley and mail it to pat@example.com")
    interrupted = frames(post(live_app.url, body, token))
    interrupt = interrupted[-1][1]["outcome"]["interrupts"][0]
    run = AgentRun.objects.get()
    assert run.status == "awaiting_approval"

    # Bob names alice's thread and run: he finds nothing of hers.
    read = httpx.get(live_app.url + PATH, params={"threadId": body["threadId"], "runId": body["runId"]},
                     headers={"Authorization": f"Bearer {theirs}"})
    assert read.status_code == 404 and error_of(read)["code"] == "not_found"
    answer = {**run_input(body["threadId"]), "resume": [{"interruptId": interrupt["id"], "status": "resolved", "payload": {"decision": "approve"}}]}
    assert post(live_app.url, answer, theirs).status_code == 404
    # Even from a thread of his own of the same name.
    frames(post(live_app.url, run_input(body["threadId"], goal="Compute 1 + 1"), theirs))
    refused = post(live_app.url, answer, theirs)
    assert refused.status_code == 404 and error_of(refused)["code"] == "not_found"
    assert Conversation.objects.filter(source=Source.AG_UI, external_id=body["threadId"]).count() == 2
    assert AgentRun.objects.get(pk=run.pk).status == "awaiting_approval"
    assert AgentStep.objects.get(run=run, kind="approval").status == "awaiting_approval"

    # Alice answers; answering the same interrupt again is refused as already decided.
    went_on = frames(post(live_app.url, answer, token))
    assert went_on[-1][1]["type"] == "RUN_FINISHED" and went_on[-1][1]["outcome"] == {"type": "success"}
    twice = post(live_app.url, {**answer, "runId": f"run-{uuid.uuid4()}"}, token)
    assert twice.status_code == 409 and error_of(twice)["code"] == "not_awaiting_approval"


def test_a_page_of_another_origin_may_use_a_token_that_lists_it(live_app, alice):
    listed = ApiToken.issue(alice, "app", scopes=[ApiToken.Scope.GATEWAY], allowed_origins="https://app.example.com\n")[1]
    preflight = httpx.options(live_app.url + PATH, headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    elsewhere = post(live_app.url, run_input("t"), listed, headers={"Origin": "https://evil.example"})
    assert elsewhere.status_code == 403 and "access-control-allow-origin" not in elsewhere.headers
    assert "https://evil.example" in error_of(elsewhere)["text"] and not AgentRun.objects.exists()
    allowed = post(live_app.url, run_input(f"thread-{uuid.uuid4()}"), listed, headers={"Origin": "https://app.example.com"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert frames(allowed)[-1][1]["type"] == "RUN_FINISHED"
    # Scripts send no Origin: the token alone decides.
    assert frames(post(live_app.url, run_input(f"thread-{uuid.uuid4()}"), listed))[-1][1]["type"] == "RUN_FINISHED"
