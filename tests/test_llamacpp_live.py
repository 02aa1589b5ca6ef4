"""Parley pointed at a llama.cpp server (OPENAI_BASE_URL, no key), with real processes: daphne, a
Celery worker and the fake llama-server. A reply completes and is billed at the estimate, marked
estimated; a Stop hangs up on the server, which stops generating."""

import json
import sys
import time
import uuid

import httpx
import pytest

from accounts.models import ApiToken
from billing.models import UsageRecord
from chat.models import ChatModel
from providers.base import estimate_tokens
from tests.fakes import expected_text
from tests.live import LiveProcess, free_port
from tests.test_live_streaming import send, sse_events
from tests.test_models_live import wait_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

MODEL = "qwen2.5-3b-instruct"
TOKENS = 30  # where the fake model ends on its own
RATE = 15  # tokens a second: a reply takes two seconds


def fake_llamacpp(port: int, tmp_path) -> LiveProcess:
    fake = LiveProcess(
        "llama-server",
        [sys.executable, "-m", "tests.fakes.llamacpp_server", "--port", str(port), "--models", MODEL,
         "--tokens", str(TOKENS), "--rate", str(RATE)],
        {"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}, tmp_path / "llama-server.log", port=port,
    ).start()
    fake.wait_for_port()
    return fake


def generation_of(port: int, asked: str) -> dict | None:
    """The fake server's record of the reply to `asked` (a title request may be there too)."""
    generations = httpx.get(f"http://127.0.0.1:{port}/_fake/generations").json()
    return next((generation for generation in generations if generation["asked"] == asked), None)


def test_a_llamacpp_reply_is_billed_estimated_and_a_stop_hangs_up(live_factory, tmp_path, alice):
    port = free_port()
    server = fake_llamacpp(port, tmp_path)
    try:
        app = live_factory(
            OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", OPENAI_API_KEY="", PARLEY_CELERY_QUEUE=f"llama-{uuid.uuid4().hex[:8]}",
        )
        app.start_worker()
        wait_for(lambda: ChatModel.objects.filter(remote_name=MODEL, available=True).exists(), 20, "the model list")
        web = app.start_daphne()
        token = ApiToken.issue(alice, "llama")[1]
        headers = {"Authorization": f"Bearer {token}"}

        created = send(web.url, token, "Hello, local model")
        reply_id = created["assistant_message"]["id"]
        with httpx.stream("GET", f"{web.url}/api/messages/{reply_id}/events", headers=headers, timeout=30) as response:
            events = sse_events(response)
        text = "".join(json.loads(event["data"])["text"] for event in events if event.get("event") == "delta")
        done = json.loads(events[-1]["data"])
        assert events[-1]["event"] == "done" and done["status"] == "complete"
        assert text == expected_text(TOKENS) and done["usage"]["estimated"] is True
        row = UsageRecord.objects.get(message_id=reply_id)
        assert (row.model, row.estimated, row.outcome) == (MODEL, True, "complete")
        assert row.completion_tokens == estimate_tokens(text) and row.prompt_tokens > 0
        first = generation_of(port, "Hello, local model")
        assert first["requested"] > TOKENS and first["produced"] == TOKENS and not first["stopped_early"]

        asked = "Now say it again"
        created = send(web.url, token, asked, conversation=created["conversation"]["id"])
        reply_id = created["assistant_message"]["id"]
        with httpx.stream("GET", f"{web.url}/api/messages/{reply_id}/events", headers=headers, timeout=30) as response:
            deltas = 0
            for line in response.iter_lines():
                deltas += line.startswith("event: delta")
                if deltas == 3:
                    break
        stop = httpx.post(f"{web.url}/api/messages/{reply_id}/stop", headers=headers)
        assert stop.status_code == 202, stop.text
        stopped_at = time.monotonic()
        wait_for(lambda: (generation_of(port, asked) or {}).get("stopped_early"), 2, "the server to stop generating")
        assert time.monotonic() - stopped_at < 2
        assert generation_of(port, asked)["produced"] < TOKENS
        with httpx.stream("GET", f"{web.url}/api/messages/{reply_id}/events", headers=headers, timeout=30) as response:
            final = sse_events(response)[-1]
        assert final["event"] == "done" and json.loads(final["data"])["status"] == "stopped"
        row = UsageRecord.objects.get(message_id=reply_id)
        assert row.estimated and row.outcome == "stopped"
    finally:
        server.stop()
