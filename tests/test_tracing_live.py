"""OpenTelemetry traces from real processes: daphne and a Celery worker export to a small OTLP/HTTP
receiver run by the test, which decodes what the SDK's exporter sends as the collector would."""

import asyncio
import gzip
import subprocess
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import websockets
from django.core.exceptions import ImproperlyConfigured
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse

from accounts.models import ApiToken
from billing.models import UsageRecord
from chat.models import ChatModel, Message
from observability import tracing
from tests.live import ROOT, child_env, fake_openai_server, free_port, wait_until

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(item) for item in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


class Receiver:
    """An OTLP/HTTP trace receiver: every span it was sent, flattened to a dict."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.path == "/v1/traces", self.path
                receiver.add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, request: ExportTraceServiceRequest) -> None:
        self.requests += 1
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "kind": span.kind, "status": span.status.code,
                        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                        "links": [link.trace_id.hex() for link in span.links], "resource": resource,
                        "events": [event.name for event in span.events],
                    })

    def named(self, name: str) -> list[dict[str, Any]]:
        return [span for span in self.spans if span["name"] == name]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()


@pytest.fixture
def fake_openai(tmp_path):
    with fake_openai_server(tmp_path, tokens=7) as url:
        yield url


def send(url: str, headers: dict[str, str], model: str, prompt: str) -> tuple[int, int]:
    conversation = httpx.post(f"{url}/api/conversations/", json={"model": model}, headers=headers, timeout=20).json()["id"]
    sent = httpx.post(f"{url}/api/conversations/{conversation}/messages", json={"content": prompt}, headers=headers, timeout=20)
    assert sent.status_code == 201, sent.text
    return conversation, sent.json()["assistant_message"]["id"]


def test_a_reply_is_one_trace_from_the_request_to_the_provider_call_and_into_the_worker(
    live_factory, alice, fake_openai, receiver
):
    ChatModel.objects.create(
        name="traced", label="Traced", provider="openai", base_url=fake_openai,
        input_price_per_million=Decimal("1"), output_price_per_million=Decimal("2"),
    )
    queue = f"tracing-live-{uuid.uuid4().hex[:8]}"
    app = live_factory(
        OPENAI_BASE_URL=fake_openai, OPENAI_API_KEY="sk-test", PARLEY_CELERY_QUEUE=queue,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_SERVICE_NAME="parley-under-test",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test", OTEL_BSP_SCHEDULE_DELAY="100", PARLEY_LOG_FORMAT="json",
    )
    server = app.start_daphne()
    app.start_worker()
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'traces')[1]}"}
    prompt = f"Tell me about the okapi {uuid.uuid4().hex}"

    conversation, reply_id = send(server.url, headers, "traced", prompt)
    wait_until(lambda: Message.objects.filter(pk=reply_id, status="complete").exists(), what="the reply")
    wait_until(lambda: receiver.named("process chat.tasks.generate_title"), what="the title task's span")
    wait_until(lambda: receiver.named("parley.reply"), what="the reply's span")

    reply_span = receiver.named("parley.reply")[0]
    trace_id = reply_span["trace_id"]
    in_trace = [span for span in receiver.spans if span["trace_id"] == trace_id]
    request = next(span for span in in_trace if span["attributes"].get("http.route") == "/api/conversations/<int:pk>/messages")
    assert request["name"] == "POST /api/conversations/<int:pk>/messages"
    assert request["attributes"]["http.response.status_code"] == 201
    assert request["parent"] == "" and request["kind"] == 2  # SERVER, the trace's root
    assert request["resource"]["service.name"] == "parley-under-test"
    assert request["resource"]["deployment.environment"] == "test"
    assert request["resource"]["parley.process"] == "web"

    admission = next(span for span in in_trace if span["name"] == "parley.admission")
    assert admission["parent"] == request["span_id"]
    assert (admission["attributes"]["parley.call.kind"], admission["attributes"]["parley.admission"]) == ("reply", "admit")
    assert reply_span["parent"] == request["span_id"]
    assert reply_span["attributes"]["parley.message_id"] == reply_id
    assert reply_span["attributes"]["parley.reply.status"] == "complete"

    # One provider call under the reply, with the GenAI attributes and the ledger's tokens.
    calls = [span for span in in_trace if span["name"] == "chat traced" and span["parent"] == reply_span["span_id"]]
    assert len(calls) == 1
    call = calls[0]["attributes"]
    row = UsageRecord.objects.get(message_id=reply_id, kind="reply")
    assert calls[0]["kind"] == 3  # CLIENT
    assert (call["gen_ai.operation.name"], call["gen_ai.system"], call["gen_ai.provider.name"]) == ("chat", "openai", "openai")
    assert call["gen_ai.request.model"] == "traced" and call["gen_ai.response.model"]
    assert (call["gen_ai.usage.input_tokens"], call["gen_ai.usage.output_tokens"]) == (row.prompt_tokens, row.completion_tokens)
    assert row.completion_tokens == 7
    assert "error.type" not in call
    assert calls[0]["events"] == []  # no event per token

    # The title task: published under the reply, run in the worker's own process in the same trace.
    published = next(span for span in in_trace if span["name"] == "send chat.tasks.generate_title")
    assert published["parent"] == reply_span["span_id"] and published["kind"] == 4  # PRODUCER
    ran = next(span for span in in_trace if span["name"] == "process chat.tasks.generate_title")
    assert ran["parent"] == published["span_id"]
    assert ran["resource"]["parley.process"] == "worker"
    assert ran["attributes"]["messaging.system"] == "celery" and ran["attributes"]["celery.state"] == "SUCCESS"
    # The title's own provider call, in the worker, under the task.
    title_calls = [span for span in in_trace if span["name"].startswith("chat ") and span["resource"]["parley.process"] == "worker"]
    assert title_calls and all(span["parent"] == ran["span_id"] for span in title_calls)

    # No span anywhere carries the prompt or the reply.
    reply_text = Message.objects.get(pk=reply_id).content
    assert reply_text
    for span in receiver.spans:
        for value in [span["name"], *map(str, span["attributes"].values())]:
            assert prompt not in value and "okapi" not in value and reply_text not in value

    # JSON log lines written inside a span name its trace and span.
    ended = next(json.loads(line) for line in server.log_path.read_text().splitlines() if f'"Reply {reply_id} complete' in line)
    assert (ended["trace_id"], ended["span_id"]) == (trace_id, reply_span["span_id"])

    # A WebSocket: its handshake is a span, answered with the request id; each frame starts a
    # trace of its own, linked to the handshake's, with the reply it asked for inside.
    socket_id = f"ws-{uuid.uuid4().hex[:8]}"

    async def over_websocket() -> tuple[str, int]:
        async with websockets.connect(
            server.url.replace("http", "ws") + "/ws/chat/", additional_headers={**headers, "X-Request-ID": socket_id},
        ) as ws:
            answered_id = ws.response.headers["x-request-id"]
            await ws.send(json.dumps({"type": "send", "conversation": conversation, "content": "Again"}))
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if event["type"] == "message":
                    message_id = event["assistant_message"]["id"]
                if event["type"] in ("done", "error") and event.get("message") == message_id:
                    return answered_id, message_id

    answered_id, ws_reply = asyncio.run(over_websocket())
    assert answered_id == socket_id
    handshake = wait_until(lambda: [span for span in receiver.named("WebSocket")
                                    if span["attributes"].get("parley.request_id") == socket_id], what="the handshake")[0]
    assert handshake["attributes"]["parley.websocket.accepted"] is True
    ws_reply_span = wait_until(lambda: [span for span in receiver.named("parley.reply")
                                        if span["attributes"]["parley.message_id"] == ws_reply], what="the socket's reply")[0]
    frame = next(span for span in receiver.named("WebSocket send") if span["trace_id"] == ws_reply_span["trace_id"])
    assert frame["parent"] == "" and frame["links"] == [handshake["trace_id"]]
    assert ws_reply_span["parent"] == frame["span_id"]

    # An incoming W3C traceparent is continued.
    parent_trace = uuid.uuid4().hex
    traced = httpx.get(f"{server.url}/api/conversations/{conversation}/", headers={
        **headers, "traceparent": f"00-{parent_trace}-{'ab' * 8}-01",
    }, timeout=20)
    assert traced.status_code == 200
    continued = wait_until(lambda: [span for span in receiver.spans if span["trace_id"] == parent_trace], what="the continued trace")
    assert continued[0]["parent"] == "ab" * 8
    assert continued[0]["name"] == "GET /api/conversations/<int:pk>/"

    # An agent run: the request that started it, its task in the worker, the run, its model steps.
    goal = f"Look up the tapir {uuid.uuid4().hex}"
    started = httpx.post(f"{server.url}/api/conversations/{conversation}/runs", json={"goal": goal}, headers=headers, timeout=20)
    assert started.status_code == 201, started.text
    run_id = started.json()["run"]["id"]
    run_span = wait_until(lambda: [span for span in receiver.named("parley.agent_run")
                                   if span["attributes"]["parley.run_id"] == run_id], what="the run's span")[0]
    assert run_span["attributes"]["parley.run.status"] == "succeeded"
    run_trace = [span for span in receiver.spans if span["trace_id"] == run_span["trace_id"]]
    run_ids = {span["span_id"]: span for span in run_trace}
    assert run_ids[run_span["parent"]]["name"] == "process agents.tasks.execute_run"
    starter = next(span for span in run_trace if span["parent"] == "")
    assert starter["name"] == "POST /api/conversations/<int:pk>/runs"
    steps = [span for span in run_trace if span["parent"] == run_span["span_id"] and span["name"] == "chat traced"]
    assert steps and all(span["attributes"]["gen_ai.usage.output_tokens"] > 0 for span in steps)

    # No span anywhere carries the prompt, the reply or the goal.
    reply_text = Message.objects.get(pk=reply_id).content
    assert reply_text
    for span in receiver.spans:
        for value in [span["name"], *map(str, span["attributes"].values())]:
            assert prompt not in value and "okapi" not in value and reply_text not in value and "tapir" not in value


def test_tracing_is_off_unless_asked_and_the_sdk_switch_wins(live_factory, alice, fake_openai, receiver):
    ChatModel.objects.create(name="untraced", label="Untraced", provider="openai", base_url=fake_openai)
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'no traces')[1]}"}
    # Only variables that ask for no traces: a service name, other signals' endpoints; and an
    # endpoint for traces with the SDK switched off.
    quiet = live_factory(
        OPENAI_BASE_URL=fake_openai, OPENAI_API_KEY="sk-test", OTEL_SERVICE_NAME="parley-quiet",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"{receiver.url}/v1/metrics", OTEL_BSP_SCHEDULE_DELAY="100",
    ).start_daphne()
    disabled = live_factory(
        OPENAI_BASE_URL=fake_openai, OPENAI_API_KEY="sk-test", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_TRACES_EXPORTER="otlp", OTEL_SDK_DISABLED="true", OTEL_BSP_SCHEDULE_DELAY="100",
    ).start_daphne()
    replies = [send(server.url, headers, "untraced", "Hello")[1] for server in (quiet, disabled)]
    wait_until(lambda: Message.objects.filter(pk__in=replies, status="complete").count() == 2, what="the replies")
    # The same requests with traces on would have been exported within 100 ms; both processes
    # exit cleanly (flushing anything they held) before the receiver is read.
    quiet.stop()
    disabled.stop()
    time.sleep(0.5)
    assert receiver.requests == 0 and receiver.spans == []


def test_which_variables_turn_traces_on():
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_SERVICE_NAME": "x", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://x"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    with pytest.raises(ImproperlyConfigured, match="unknown exporter 'jaeger'"):
        tracing.wanted({"OTEL_TRACES_EXPORTER": "jaeger"})
    with pytest.raises(ImproperlyConfigured, match="http/protobuf only"):
        tracing.check({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    tracing.check({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})  # no OTLP: no matter
    tracing.check({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})


@pytest.mark.django_db
def test_a_worker_with_a_bad_exporter_refuses_to_start():
    ended = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "parley", "worker", "--concurrency", "1", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=child_env(OTEL_TRACES_EXPORTER="zipkin"), capture_output=True, text=True, timeout=60,
    )
    assert ended.returncode != 0
    assert "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin' (otlp, console or none)" in ended.stderr + ended.stdout


def test_spans_still_held_are_exported_when_the_processes_stop(live_factory, alice, fake_openai, receiver):
    ChatModel.objects.create(name="flushed", label="Flushed", provider="openai", base_url=fake_openai)
    queue = f"tracing-stop-{uuid.uuid4().hex[:8]}"
    # A batch held for a minute: only the exit can send it within the test.
    app = live_factory(
        OPENAI_BASE_URL=fake_openai, OPENAI_API_KEY="sk-test", PARLEY_CELERY_QUEUE=queue,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{receiver.url}/v1/traces", OTEL_BSP_SCHEDULE_DELAY="60000",
    )
    server = app.start_daphne()
    worker = app.start_worker()
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'flush')[1]}"}
    conversation, reply_id = send(server.url, headers, "flushed", "Hello")
    wait_until(lambda: Message.objects.filter(pk=reply_id, status="complete").exists(), what="the reply")
    wait_until(lambda: any("generate_title" in line and "succeeded" in line for line in worker.log_path.read_text().splitlines()),
               what="the title task")
    time.sleep(1)
    assert receiver.spans == []
    server.stop()
    worker.stop()
    wait_until(lambda: receiver.named("parley.reply") and receiver.named("process chat.tasks.generate_title"),
               timeout=15, what="the spans sent at exit")
    assert receiver.named("parley.reply")[0]["resource"]["service.name"] == "parley"


def test_a_failed_provider_call_has_its_error_type_and_so_has_the_reply(live_factory, alice, fake_openai, receiver):
    ChatModel.objects.create(name="failing#scenario=server_error", label="Failing", provider="openai", base_url=fake_openai)
    app = live_factory(
        OPENAI_BASE_URL=fake_openai, OPENAI_API_KEY="sk-test", PROVIDER_MAX_RETRIES="0",
        OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{receiver.url}/v1/traces", OTEL_BSP_SCHEDULE_DELAY="100",
    )
    server = app.start_daphne()
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'errors')[1]}"}
    _, reply_id = send(server.url, headers, "failing#scenario=server_error", "Hello")
    wait_until(lambda: Message.objects.filter(pk=reply_id, status="failed").exists(), what="the failed reply")
    reply_span = wait_until(lambda: receiver.named("parley.reply"), what="the reply's span")[0]
    calls = [span for span in receiver.spans if span["parent"] == reply_span["span_id"] and span["name"].startswith("chat ")]
    assert calls and all(span["attributes"]["error.type"] == "provider_unavailable" and span["status"] == 2 for span in calls)
    assert "gen_ai.usage.output_tokens" not in calls[0]["attributes"]
    assert reply_span["attributes"]["error.type"] == "provider_unavailable" and reply_span["status"] == 2
    assert reply_span["attributes"]["parley.reply.status"] == "failed"
