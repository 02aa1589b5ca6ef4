"""A real worker lists the endpoints' models at its start; an endpoint that was down then is listed
by the schedule once it is up."""

import sys
import time
import uuid

import pytest

from chat.models import ChatModel, ProviderEndpoint
from tests.live import LiveProcess, free_port

pytestmark = pytest.mark.django_db(transaction=True)


def fake_openai(port: int, models: str, tmp_path, name: str) -> LiveProcess:
    fake = LiveProcess(
        name, [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port), "--models", models, "--api-key", "sk-" + name],
        {"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}, tmp_path / f"{name}.log", port=port,
    ).start()
    fake.wait_for_port()
    return fake


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout:g} s for {what}")


def offered() -> set[str]:
    return set(ChatModel.objects.offered().values_list("name", flat=True))


def test_a_worker_lists_models_at_its_start_and_a_late_endpoint_on_schedule(live_factory, tmp_path, settings):
    up_port, late_port = free_port(), free_port()
    up = fake_openai(up_port, "model-up", tmp_path, "up")
    late = None
    try:
        app = live_factory(
            PARLEY_CELERY_QUEUE=f"models-{uuid.uuid4().hex[:8]}", PARLEY_MODELS_REFRESH_SECONDS="10",
            UP_KEY="sk-up", LATE_KEY="sk-late",
            PARLEY_OPENAI_ENDPOINTS=f"up=http://127.0.0.1:{up_port}/v1|UP_KEY,late=http://127.0.0.1:{late_port}/v1|LATE_KEY",
        )
        started = time.monotonic()
        app.start_worker()
        wait_for(lambda: ChatModel.objects.filter(name="up/model-up").exists(), 20, "the worker's first refresh")
        # At the worker's start, well before beat's first tick (10 s).
        assert time.monotonic() - started < 10
        wait_for(lambda: ProviderEndpoint.objects.filter(name="late", ok=False).exists(), 10, "the late endpoint's status")
        assert "could not connect" in ProviderEndpoint.objects.get(name="late").error

        settings.PARLEY_OPENAI_ENDPOINTS = [
            ("up", f"http://127.0.0.1:{up_port}/v1", "sk-up"), ("late", f"http://127.0.0.1:{late_port}/v1", "sk-late"),
        ]
        assert offered() >= {"up/model-up"} and not any(name.startswith("late/") for name in offered())
        late = fake_openai(late_port, "model-late,model-late-2", tmp_path, "late")
        wait_for(lambda: ChatModel.objects.filter(name="late/model-late-2").exists(), 30, "a scheduled refresh")
        assert offered() >= {"up/model-up", "late/model-late", "late/model-late-2"}
        assert ProviderEndpoint.objects.get(name="late").ok
    finally:
        up.stop()
        if late is not None:
            late.stop()
