"""The OpenAI-compatible gateway's refusals, as the official openai SDK reads them: its exception
classes, the `param` and `code` it names, and its retries, which honour `retry-after` for a limit
that frees within seconds and give up at once on one that does not."""

import base64
import time
from datetime import timedelta

import httpx
import openai
import pytest
from django.utils import timezone

from accounts.models import ApiToken, PlanOverride
from billing.models import UsageRecord
from tests import gateway_live
from tests.fakes import Scenario
from tests.files import png
from tests.gateway_live import IMAGE_MAX_BYTES, MAX_BODY_BYTES, UPSTREAM, Counter, client, upstream_model

DEMO = "parley-demo"
# The shared fixtures, used by name.
fake_upstream, upstream, gateway_app = gateway_live.fake_upstream, gateway_live.upstream, gateway_live.gateway_app

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]
HELLO = [{"role": "user", "content": "hello /words 3"}]


@pytest.fixture
def key(alice) -> str:
    return ApiToken.issue(alice, "gateway", scopes=["gateway"])[1]


def test_a_call_without_a_key_is_refused_401(gateway_app):
    with pytest.raises(openai.AuthenticationError) as refused:
        # The SDK insists on a key of its own; Omit takes its Authorization header away.
        client(gateway_app, "unused").chat.completions.create(
            model=DEMO, messages=HELLO, extra_headers={"Authorization": openai.Omit()},
        )
    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key" and refused.value.type == "invalid_request_error"
    assert refused.value.body["message"].startswith("No API key")


@pytest.mark.parametrize("state", ["unknown", "revoked", "expired"])
def test_a_dead_key_is_refused_401(gateway_app, alice, state):
    token, raw = ApiToken.issue(alice, "gateway", scopes=["gateway"])
    if state == "unknown":
        raw = raw[:-4] + "AAAA"
    elif state == "revoked":
        token.revoke()
    else:
        token.expires = timezone.now() - timedelta(seconds=1)
        token.save()
    with pytest.raises(openai.AuthenticationError) as refused:
        client(gateway_app, raw).chat.completions.create(model=DEMO, messages=HELLO)
    assert refused.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(gateway_app, raw).models.list()


def test_a_revoked_key_is_refused_at_once_by_every_web_process(gateway_app, alice):
    other = gateway_app.servers[1] if len(gateway_app.servers) > 1 else gateway_app.start_daphne()
    token, raw = ApiToken.issue(alice, "gateway", scopes=["gateway"])
    for server in (gateway_app.servers[0], other):
        assert len(client(server, raw).models.list().data) > 0
    token.revoke()
    for server in (gateway_app.servers[0], other):
        with pytest.raises(openai.AuthenticationError):
            client(server, raw).chat.completions.create(model=DEMO, messages=HELLO)


def test_a_chat_token_is_refused_403(gateway_app, alice):
    raw = ApiToken.issue(alice, "chat only", scopes=["chat"])[1]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(gateway_app, raw).chat.completions.create(model=DEMO, messages=HELLO)
    assert refused.value.code == "insufficient_scope" and refused.value.type == "permission_error"


def test_a_model_outside_the_plan_is_refused_403_and_not_listed(gateway_app, upstream, alice, key):
    allowed = upstream_model(upstream)
    PlanOverride.objects.create(user=alice).allowed_models.set([allowed])
    sdk = client(gateway_app, key)
    listed = {model.id for model in sdk.models.list()}
    assert UPSTREAM in listed and DEMO not in listed
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk.chat.completions.create(model=DEMO, messages=HELLO)
    assert refused.value.code == "model_not_allowed"


def test_an_unknown_model_is_refused_404(gateway_app, key):
    with pytest.raises(openai.NotFoundError) as refused:
        client(gateway_app, key).chat.completions.create(model="no-such-model", messages=HELLO)
    assert refused.value.code == "model_not_found"


@pytest.mark.parametrize(("fields", "param"), [
    ({"temperature": 3}, "temperature"),
    ({"top_p": -1}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"tool_choice": {"type": "function", "function": {"name": "absent"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
])
def test_bad_fields_are_refused_400_naming_the_field(gateway_app, key, fields, param):
    body = {"model": DEMO, "messages": HELLO, **fields}
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway_app, key).chat.completions.create(**body)
    assert refused.value.param == param and refused.value.type == "invalid_request_error"
    assert UsageRecord.objects.count() == 0


def test_a_call_longer_than_the_context_window_is_refused_400(gateway_app, upstream, key):
    upstream_model(upstream, context_window=300, max_output_tokens=100)
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway_app, key).chat.completions.create(model=UPSTREAM, messages=[{"role": "user", "content": "word " * 2000}])
    assert refused.value.code == "context_length_exceeded"
    assert upstream.requests == []


def test_a_spent_requests_per_minute_limit_is_a_429_with_the_rate_limit_headers(gateway_app, alice, key):
    PlanOverride.objects.create(user=alice, requests_per_minute=1)
    sdk = client(gateway_app, key)
    sdk.chat.completions.create(model=DEMO, messages=HELLO)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.chat.completions.create(model=DEMO, messages=HELLO)
    headers = refused.value.response.headers
    assert refused.value.code == "rate_limit_exceeded"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "1" and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-should-retry" not in headers


def test_the_sdk_waits_out_retry_after_and_succeeds(gateway_app, alice, key):
    """One reply at a time: a second call while the first streams is refused with `retry-after`,
    and the SDK's own retry, after that wait, gets its answer."""
    PlanOverride.objects.create(user=alice, concurrent_replies=1)
    first = client(gateway_app, key).chat.completions.create(
        model=DEMO, messages=[{"role": "user", "content": "slow /words 10 /slow 100"}], stream=True,
    )
    next(iter(first))  # the first call holds the one slot while it streams for another second
    counter = Counter()
    started = time.monotonic()
    second = client(gateway_app, key, counter, max_retries=2).chat.completions.create(model=DEMO, messages=HELLO)
    waited = time.monotonic() - started
    assert second.choices[0].message.content == "word1 word2 word3"
    assert counter.sent == 2 and counter.answers == [(429, "2"), (200, None)]  # refused once, then answered
    assert waited >= 1.5  # the SDK waited as `retry-after` (2 s) said, not its own half-second backoff
    assert "".join(c.choices[0].delta.content or "" for c in first if c.choices).split()[-1] == "word10"
    assert UsageRecord.objects.filter(kind="gateway").count() == 2


def test_a_spent_monthly_budget_is_insufficient_quota_and_the_sdk_does_not_retry(gateway_app, alice, key):
    PlanOverride.objects.create(user=alice, tokens_per_month=5)
    counter = Counter()
    with pytest.raises(openai.RateLimitError) as refused:
        client(gateway_app, key, counter, max_retries=3).chat.completions.create(model=DEMO, messages=HELLO)
    assert refused.value.code == "insufficient_quota" and refused.value.type == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert refused.value.response.headers["x-ratelimit-limit-tokens"] == "5"
    assert counter.sent == 1 and [status for status, _ in counter.answers] == [429]
    assert UsageRecord.objects.count() == 0


@pytest.mark.parametrize(("scenario", "error", "status"), [
    (Scenario("rate_limited", retry_after="0"), openai.RateLimitError, 429),
    (Scenario("status", status=503), openai.InternalServerError, 503),
    (Scenario("status", status=529), openai.InternalServerError, 503),
])
def test_an_upstream_that_keeps_failing_before_its_first_token_maps_to_429_or_503(gateway_app, upstream, key, scenario, error, status):
    upstream_model(upstream)
    upstream.server.scenario = scenario
    with pytest.raises(error) as refused:
        client(gateway_app, key).chat.completions.create(model=UPSTREAM, messages=HELLO)
    assert refused.value.status_code == status
    assert len(upstream.requests) >= 2  # Parley's own retries first
    # Each attempt is a ledger row of its own, nothing billed for any.
    rows = list(UsageRecord.objects.values_list("kind", "outcome", "completion_tokens"))
    assert rows == [("gateway", "failed", 0)] * len(upstream.requests)


def test_when_every_model_of_the_chain_fails_the_client_gets_a_503(gateway_app, upstream, key):
    from chat.models import FailoverLink

    first = upstream_model(upstream, remote=f"{UPSTREAM}#scenario=status&status=503")
    second = upstream_model(upstream, name="fake-second", remote="fake-second#scenario=status&status=529")
    FailoverLink.objects.create(model=first, fallback=second, position=1)
    with pytest.raises(openai.InternalServerError) as refused:
        client(gateway_app, key).chat.completions.create(model=UPSTREAM, messages=HELLO)
    assert refused.value.status_code == 503
    assert {recorded.json["model"].partition("#")[0] for recorded in upstream.requests} == {UPSTREAM, "fake-second"}


def test_an_upstream_wait_longer_than_parley_waits_is_passed_on_to_the_client(gateway_app, upstream, key):
    upstream_model(upstream)
    upstream.server.scenario = Scenario("rate_limited", retry_after="3")
    with pytest.raises(openai.RateLimitError) as refused:
        client(gateway_app, key).chat.completions.create(model=UPSTREAM, messages=HELLO)
    assert refused.value.response.headers["retry-after"] == "3"
    assert len(upstream.requests) == 1  # beyond Parley's cap on waiting: the client's retry waits instead


def test_an_upstream_that_fails_once_is_retried_by_parley(gateway_app, upstream, key):
    upstream_model(upstream)
    upstream.server.scenario = Scenario("status", status=503, times=1)
    completion = client(gateway_app, key).chat.completions.create(model=UPSTREAM, messages=HELLO)
    assert completion.choices[0].finish_reason == "stop" and len(upstream.requests) == 2


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/v1/nowhere", 404),
    ("GET", "/v1/chat/completions", 405),
    ("POST", "/v1/models", 405),
])
def test_unknown_paths_and_methods_answer_in_openais_error_shape(gateway_app, key, method, path, status):
    answer = httpx.request(method, f"{gateway_app.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]


def test_a_reply_that_fails_part_way_is_an_error_streamed_or_not(gateway_app, key):
    sdk = client(gateway_app, key)
    failing = [{"role": "user", "content": "/words 20 /fail provider_unavailable"}]
    with pytest.raises(openai.APIStatusError) as refused:
        sdk.chat.completions.create(model=DEMO, messages=failing)
    assert refused.value.status_code == 502 and refused.value.code == "provider_unavailable"
    text = []
    with pytest.raises(openai.APIError) as broke:
        for chunk in sdk.chat.completions.create(model=DEMO, messages=failing, stream=True):
            text.append(chunk.choices[0].delta.content or "")
    assert "".join(text) == "word1 word2"  # what came before the failure reached the client
    assert broke.value.code == "provider_unavailable"


def image_part(size: int) -> dict:
    padded = png(40, 30) + b"\0" * (size - len(png(40, 30)))  # a PNG reader stops at its end
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(padded).decode()}}


def test_an_image_over_the_size_limit_is_refused_400(gateway_app, key):
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway_app, key).chat.completions.create(model=DEMO, messages=[{"role": "user", "content": [
            {"type": "text", "text": "Look"}, image_part(IMAGE_MAX_BYTES + 1),
        ]}])
    assert refused.value.code == "image_too_large"


def test_a_body_too_large_to_hold_is_refused_413_in_openais_shape(gateway_app, key):
    with pytest.raises(openai.APIStatusError) as refused:
        client(gateway_app, key).chat.completions.create(model=DEMO, messages=[{"role": "user", "content": [
            {"type": "text", "text": "Look"}, image_part(MAX_BODY_BYTES),  # a third more as base64
        ]}])
    assert refused.value.status_code == 413 and refused.value.code == "request_too_large"
