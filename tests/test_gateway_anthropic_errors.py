"""Refusals of POST /v1/messages in Anthropic's own error shape and status codes, as the official
`anthropic` SDK raises them, and its retries doing the right thing: a limit that resets within
the minute is retried after `retry-after`; a budget spent for the month is not (`x-should-retry:
false`). Through real daphne and the demo model."""

import base64
import threading
from decimal import Decimal

import anthropic
import httpx
import httpx2
import pytest

from accounts.models import ApiToken, Plan
from billing.models import UsageRecord
from chat.models import ChatModel, Conversation
from tests.files import png

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

DEMO = "parley-demo"
HELLO = [{"role": "user", "content": "hello /words 3"}]


@pytest.fixture
def key(alice) -> str:
    return ApiToken.issue(alice, "errors", scopes=[ApiToken.Scope.GATEWAY])[1]


class Counted:
    """An SDK client whose every HTTP response is counted: the SDK's retries made visible."""

    def __init__(self, live_app, key: str, max_retries: int) -> None:
        self.statuses: list[int] = []
        http = httpx2.Client(event_hooks={"response": [lambda response: self.statuses.append(response.status_code)]})
        self.sdk = anthropic.Anthropic(api_key=key, base_url=live_app.url, max_retries=max_retries, http_client=http)


def sdk(live_app, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=live_app.url, max_retries=0)


def error_of(raised: pytest.ExceptionInfo) -> tuple[int, str]:
    body = raised.value.body
    assert body["type"] == "error" and isinstance(body["error"]["message"], str) and body["error"]["message"]
    return raised.value.status_code, body["error"]["type"]


def set_free(**limits) -> None:
    Plan.objects.filter(name="Free").update(**limits)


def test_an_unknown_key_is_an_authentication_error(live_app):
    with pytest.raises(anthropic.AuthenticationError) as raised:
        sdk(live_app, "pk_not-a-real-token").messages.create(model=DEMO, max_tokens=10, messages=HELLO)
    assert error_of(raised) == (401, "authentication_error")
    missing = httpx.post(f"{live_app.url}/v1/messages", json={"model": DEMO, "max_tokens": 10, "messages": HELLO})
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert "x-api-key" in missing.json()["error"]["message"]


def test_a_revoked_key_is_refused_at_once(live_app, alice, key):
    assert sdk(live_app, key).messages.create(model=DEMO, max_tokens=10, messages=HELLO).content
    ApiToken.objects.filter(user=alice).update(revoked="2026-01-01T00:00:00Z")
    with pytest.raises(anthropic.AuthenticationError):
        sdk(live_app, key).messages.create(model=DEMO, max_tokens=10, messages=HELLO)


def test_a_chat_only_token_is_a_permission_error(live_app, alice):
    chat_only = ApiToken.issue(alice, "chat")[1]
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        sdk(live_app, chat_only).messages.create(model=DEMO, max_tokens=10, messages=HELLO)
    assert error_of(raised) == (403, "permission_error")
    assert "gateway scope" in raised.value.body["error"]["message"]


def test_a_model_outside_the_plan_is_a_permission_error(live_app, key):
    other = ChatModel.objects.create(name="other-demo", label="Other", provider="demo")
    Plan.objects.get(name="Free").allowed_models.set([ChatModel.objects.get(name=DEMO)])
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        sdk(live_app, key).messages.create(model=other.name, max_tokens=10, messages=HELLO)
    assert error_of(raised) == (403, "permission_error")


def test_an_unknown_model_is_not_found(live_app, key):
    with pytest.raises(anthropic.NotFoundError) as raised:
        sdk(live_app, key).messages.create(model="claude-nonesuch", max_tokens=10, messages=HELLO)
    assert error_of(raised) == (404, "not_found_error")
    assert "claude-nonesuch" in raised.value.body["error"]["message"]


@pytest.mark.parametrize(("body", "named"), [
    ({"model": DEMO, "messages": HELLO}, "max_tokens"),
    ({"model": DEMO, "max_tokens": 0, "messages": HELLO}, "max_tokens"),
    ({"max_tokens": 10, "messages": HELLO}, "model"),
    ({"model": DEMO, "max_tokens": 10, "messages": []}, "messages"),
    ({"model": DEMO, "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"model": DEMO, "max_tokens": 10, "messages": HELLO, "temperature": 1.5}, "temperature"),
    ({"model": DEMO, "max_tokens": 10, "messages": HELLO, "stop_sequences": "END"}, "stop_sequences"),
    ({"model": DEMO, "max_tokens": 10, "messages": HELLO, "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
    ({"model": DEMO, "max_tokens": 10, "messages": HELLO, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
    ({"model": DEMO, "max_tokens": 10, "messages": [*HELLO, {"role": "assistant", "content": "hi"}]}, "last message"),
    ({"model": DEMO, "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "document"}]}]}, "messages[0].content[0]"),
])
def test_an_invalid_request_names_what_to_fix(live_app, key, body, named):
    response = httpx.post(f"{live_app.url}/v1/messages", json=body, headers={"x-api-key": key}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "invalid_request_error"
    assert named in response.json()["error"]["message"]


def test_the_sdk_raises_a_bad_request_for_an_image_by_url(live_app, key):
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk(live_app, key).messages.create(model=DEMO, max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
            {"type": "text", "text": "What is it?"},
        ]}])
    assert error_of(raised) == (400, "invalid_request_error")
    assert "does not fetch images" in raised.value.body["error"]["message"]
    lying = base64.b64encode(png(2, 2)).decode()
    with pytest.raises(anthropic.BadRequestError):
        sdk(live_app, key).messages.create(model=DEMO, max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": lying}},
        ]}])


def test_a_body_that_is_not_json_is_a_bad_request(live_app, key):
    response = httpx.post(f"{live_app.url}/v1/messages", content=b"{not json", headers={"x-api-key": key, "content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_a_call_past_the_gateways_size_is_request_too_large(live_app, key):
    with pytest.raises(anthropic.ContentTooLargeError) as raised:
        sdk(live_app, key).messages.create(model=DEMO, max_tokens=10, messages=[{"role": "user", "content": "x" * 2_000_001}])
    assert error_of(raised) == (413, "request_too_large")


def test_a_limit_that_resets_soon_is_retried_after_retry_after(live_app, alice, key):
    set_free(concurrent_replies=1, requests_per_minute=None)
    body = {"model": DEMO, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "busy /words 5 /slow 300"}]}
    started = threading.Event()

    def hold_the_only_slot() -> None:
        with httpx.stream("POST", f"{live_app.url}/v1/messages", json=body, headers={"x-api-key": key}, timeout=30) as response:
            for line in response.iter_lines():
                if "content_block_delta" in line:
                    started.set()

    holder = threading.Thread(target=hold_the_only_slot)
    holder.start()
    assert started.wait(30)
    client = Counted(live_app, key, max_retries=3)
    message = client.sdk.messages.create(model=DEMO, max_tokens=10, messages=HELLO)
    holder.join(30)
    # Refused while the other reply ran, then retried after `retry-after` (2 s): by then it had ended.
    assert client.statuses[0] == 429 and client.statuses[-1] == 200
    assert message.content[0].text.split() == ["word1", "word2", "word3"]
    assert UsageRecord.objects.filter(user=alice, kind=UsageRecord.Kind.GATEWAY, outcome="complete").count() == 2


def test_a_per_minute_refusal_carries_the_rate_limit_headers(live_app, key):
    set_free(requests_per_minute=1)
    sdk(live_app, key).messages.create(model=DEMO, max_tokens=10, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as raised:
        sdk(live_app, key).messages.create(model=DEMO, max_tokens=10, messages=HELLO)
    assert error_of(raised) == (429, "rate_limit_error")
    headers = raised.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["anthropic-ratelimit-requests-limit"] == "1" and headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-reset"].startswith("20")  # an RFC 3339 time, as Anthropic's
    assert "x-should-retry" not in headers  # worth the SDK's retry
    assert "1 message a minute" in raised.value.body["error"]["message"]


def test_a_monthly_budget_spent_is_not_retried(live_app, alice, key):
    ChatModel.objects.filter(name=DEMO).update(output_price_per_million=Decimal(1000))
    set_free(cost_per_month=Decimal("1.00"))  # the demo's reservation costs more than the budget
    client = Counted(live_app, key, max_retries=3)
    with pytest.raises(anthropic.RateLimitError) as raised:
        client.sdk.messages.create(model=DEMO, max_tokens=2000, messages=HELLO)
    assert error_of(raised) == (429, "rate_limit_error")
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert client.statuses == [429]  # one request: the SDK did not retry in vain
    assert not UsageRecord.objects.filter(user=alice).exists() and not Conversation.objects.filter(owner=alice).exists()


def test_a_daily_request_limit_is_not_retried(live_app, key):
    set_free(requests_per_day=1, requests_per_minute=None)
    sdk(live_app, key).messages.create(model=DEMO, max_tokens=10, messages=HELLO)
    client = Counted(live_app, key, max_retries=2)
    with pytest.raises(anthropic.RateLimitError) as raised:
        client.sdk.messages.create(model=DEMO, max_tokens=10, messages=HELLO)
    assert raised.value.response.headers["x-should-retry"] == "false" and client.statuses == [429]


def test_an_overloaded_model_is_an_overloaded_error(live_app, alice, key):
    with pytest.raises(anthropic.OverloadedError) as raised:
        sdk(live_app, key).messages.create(model=DEMO, max_tokens=10, messages=[{"role": "user", "content": "/words 0 /fail overloaded"}])
    assert error_of(raised) == (529, "overloaded_error")
    assert raised.value.response.headers["retry-after"] == "2"
    assert set(UsageRecord.objects.filter(user=alice).values_list("kind", "outcome")) == {(UsageRecord.Kind.GATEWAY, "failed")}


def test_an_unreachable_model_is_an_api_error(live_app, key):
    with pytest.raises(anthropic.InternalServerError) as raised:
        sdk(live_app, key).messages.create(model=DEMO, max_tokens=10, messages=[{"role": "user", "content": "/words 0 /fail provider_unavailable"}])
    assert error_of(raised) == (500, "api_error")


def test_a_failure_after_the_first_token_is_an_error_event_in_the_stream(live_app, key):
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as raised:
        with sdk(live_app, key).messages.stream(
            model=DEMO, max_tokens=50, messages=[{"role": "user", "content": "/words 9 /fail rate_limited"}],
        ) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert raised.value.body["type"] == "error" and raised.value.body["error"]["type"] == "rate_limit_error"
    assert "".join(received).split()[:1] == ["word1"]  # the words before the failure came through


def test_a_body_too_large_to_hold_is_request_too_large(live_app, key):
    # Past PARLEY_MAX_BODY_BYTES (8 MiB here) Django will not hold the body: still Anthropic's shape.
    body = b'{"model": "parley-demo", "max_tokens": 5, "messages": [{"role": "user", "content": "' + b"x" * (9 * 1024 * 1024) + b'"}]}'
    response = httpx.post(f"{live_app.url}/v1/messages", content=body, headers={"x-api-key": key, "content-type": "application/json"}, timeout=60)
    assert response.status_code == 413
    assert (response.json()["type"], response.json()["error"]["type"]) == ("error", "request_too_large")
