"""A new user points Parley at a local OpenAI-compatible server (a llama.cpp stand-in listing one
model). The picker offers that model, by its own name, price unknown, as the default, and none of
the official models it does not serve; the reply is labelled by it and billed at 0, flagged."""

import uuid

import pytest

from billing.models import UsageRecord
from chat.models import Message
from tests.browser.conftest import log_in
from tests.live import free_port
from tests.test_models_live import fake_openai, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_the_picker_offers_what_the_local_server_serves_and_it_is_never_mispriced(browser, live_factory, tmp_path, user):
    from chat.models import ChatModel

    port = free_port()
    server = fake_openai(port, "local-llama-3b", tmp_path, "llama")
    try:
        app = live_factory(
            OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", OPENAI_API_KEY="sk-llama",
            PARLEY_CELERY_QUEUE=f"local-{uuid.uuid4().hex[:8]}",
        )
        app.start_worker()
        wait_for(lambda: ChatModel.objects.filter(remote_name="local-llama-3b", available=True).exists(), 20, "the model list")
        web = app.start_daphne()
        context = browser.new_context(base_url=web.url, viewport={"width": 1280, "height": 860})
        page = context.new_page()
        log_in(page, user.username)  # to the page's load: Enter pressed before its scripts run sends nothing
        options = page.eval_on_selector_all("#model-picker option", "os => os.map((o) => [o.value, o.textContent.trim(), o.selected])")
        names = [value for value, _, _ in options]
        assert "gpt-4o-mini" not in names and "gpt-4.1" not in names and "gpt-4.1-mini" not in names
        assert ["local-llama-3b", "local-llama-3b · price unknown", True] in [list(option) for option in options]
        assert sum("demo" in label.lower() for _, label, _ in options) == 1

        page.fill("#composer-input", "Hello, local model")
        page.press("#composer-input", "Enter")
        page.wait_for_function("() => document.querySelector('.msg-assistant')?.dataset.status === 'complete'", timeout=30_000)
        page.click(".msg-assistant .msg-details-toggle")
        details = page.inner_text(".msg-assistant .msg-details")
        assert "local-llama-3b" in details and "unknown" in details
        reply = Message.objects.get(role="assistant", conversation__owner=user)
        assert reply.model == "local-llama-3b"
        entry = UsageRecord.objects.get(message_id=reply.pk)
        assert (entry.model, entry.price_unknown, entry.cost_usd) == ("local-llama-3b", True, 0)
        context.close()
    finally:
        server.stop()
