"""JSON logs from real processes: one object per line, the request id from X-Request-ID in daphne's
lines and in the Celery worker's lines for the work it was sent, and a prompt's text kept out of
every line until an admin turns on the site's switch."""

import json
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from accounts.models import ApiToken, SiteSettings
from agents.models import AgentRun
from chat.models import ChatModel, Message
from observability import logs
from tests.live import fake_openai_server, wait_until

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fake_openai(tmp_path):
    with fake_openai_server(tmp_path, tokens=5) as url:
        yield url


def lines_of(path: Path) -> list[dict]:
    """Every line the process wrote, each of which must be one JSON object."""
    out = []
    for raw in path.read_text(errors="replace").splitlines():
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except ValueError:
                raise AssertionError(f"not a JSON line in {path.name}: {raw!r}") from None
    return out


def test_json_lines_carry_the_request_id_into_the_worker_and_never_the_prompt_until_the_switch_is_on(
    live_factory, alice, fake_openai
):
    ChatModel.objects.create(
        name="logged", label="Logged", provider="openai", base_url=fake_openai,
        input_price_per_million=Decimal("1"), output_price_per_million=Decimal("2"),
    )
    queue = f"logs-live-{uuid.uuid4().hex[:8]}"
    app = live_factory(
        OPENAI_BASE_URL=fake_openai, OPENAI_API_KEY="sk-test", PARLEY_CELERY_QUEUE=queue, PARLEY_LOG_FORMAT="json",
    )
    server = app.start_daphne()
    worker = app.start_worker()
    token = {"Authorization": f"Bearer {ApiToken.issue(alice, 'logs')[1]}"}
    url = f"{server.url}/api/conversations/"

    # A well-formed id is kept and sent back; a bad one (too long, or with spaces) is replaced.
    made = httpx.post(url, json={"model": "logged"}, headers={**token, "X-Request-ID": "lb-1=abc/2"}, timeout=20)
    assert made.status_code == 201 and made.headers["x-request-id"] == "lb-1=abc/2"
    conversation = made.json()["id"]
    for bad in ("x" * 129, "two words", "<script>", ""):
        answered = httpx.get(f"{url}{conversation}/", headers={**token, "X-Request-ID": bad}, timeout=20)
        assert answered.status_code == 200
        assert answered.headers["x-request-id"] != bad and len(answered.headers["x-request-id"]) == 32
    fresh = {httpx.get(f"{url}{conversation}/", headers=token, timeout=20).headers["x-request-id"] for _ in range(2)}
    assert len(fresh) == 2  # a new id for each request that came without one

    # A message: its request id on daphne's lines about it, its text as a hash only.
    prompt = f"My secret word is {uuid.uuid4().hex}"
    send_id = f"send-{uuid.uuid4().hex[:12]}"
    sent = httpx.post(f"{url}{conversation}/messages", json={"content": prompt}, headers={**token, "X-Request-ID": send_id}, timeout=20)
    assert sent.status_code == 201 and sent.headers["x-request-id"] == send_id
    reply_id = sent.json()["assistant_message"]["id"]
    wait_until(lambda: Message.objects.filter(pk=reply_id, status="complete").exists(), what="the reply")
    reply_text = Message.objects.get(pk=reply_id).content

    def web_line(start: str) -> dict:
        return wait_until(lambda: next((line for line in lines_of(server.log_path) if line["message"].startswith(start)), None),
                          what=f"a line starting {start!r}")

    stored = web_line(f"Message {sent.json()['user_message']['id']} in conversation {conversation}")
    assert stored["request_id"] == send_id and stored["user_id"] == alice.pk
    assert stored["level"] == "INFO" and stored["logger"] == "chat.replies" and stored["time"].endswith("Z")
    assert logs.digest(prompt) in stored["message"]
    ended = web_line(f"Reply {reply_id} complete")
    assert ended["request_id"] == send_id and logs.digest(reply_text) in ended["message"]

    # An agent run started by a request: the worker's lines for it carry that request's id.
    run_id_header = f"run-{uuid.uuid4().hex[:12]}"
    goal = f"Find the word {uuid.uuid4().hex}"
    started = httpx.post(f"{server.url}/api/conversations/{conversation}/runs", json={"goal": goal},
                         headers={**token, "X-Request-ID": run_id_header}, timeout=20)
    assert started.status_code == 201, started.text
    run_id = started.json()["run"]["id"]
    wait_until(lambda: AgentRun.objects.filter(pk=run_id).exclude(status__in=["queued", "running"]).exists(), what="the run")
    working = wait_until(lambda: next((line for line in lines_of(worker.log_path)
                                       if line["message"].startswith(f"Run {run_id} working")), None), what="the run's line")
    assert working["request_id"] == run_id_header and working["user_id"] == alice.pk
    assert logs.digest(goal) in working["message"]

    everything = server.log_path.read_text() + worker.log_path.read_text()
    for text in (prompt, reply_text, goal):
        assert text not in everything

    # The admin's switch: from then on the text itself is logged.
    site = SiteSettings.current()
    site.log_message_text = True
    site.save()
    second = f"Now log this {uuid.uuid4().hex}"
    again = httpx.post(f"{url}{conversation}/messages", json={"content": second}, headers=token, timeout=20)
    assert again.status_code == 201
    wait_until(lambda: Message.objects.filter(pk=again.json()["assistant_message"]["id"], status="complete").exists(), what="reply 2")
    shown = web_line(f"Message {again.json()['user_message']['id']} in conversation")
    assert shown["message"].endswith(f"text {second}") and shown["request_id"] == again.headers["x-request-id"]
    assert prompt not in server.log_path.read_text()  # what was hashed stays hashed
