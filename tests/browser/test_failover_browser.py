"""A model whose provider keeps failing before its first token: the next model of its failover chain
answers, and the page says so under the reply, in its Details, and again after a reload."""

import uuid

import pytest

from billing.models import UsageRecord
from chat.catalogue import DEMO_NAME
from chat.models import ChatModel, FailoverLink, Message
from tests.browser.conftest import log_in
from tests.live import free_port
from tests.test_models_live import fake_openai

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_the_page_says_which_model_answered_and_why(browser, live_factory, tmp_path, user):
    port = free_port()
    server = fake_openai(port, "flaky", tmp_path, "flaky")
    try:
        app = live_factory(
            OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", OPENAI_API_KEY="sk-flaky",
            PARLEY_RETRY_ATTEMPTS="2", PARLEY_RETRY_BASE_SECONDS="0.05",
            PARLEY_CELERY_QUEUE=f"failover-{uuid.uuid4().hex[:8]}",
        )
        flaky = ChatModel.objects.create(
            name="flaky", label="Flaky GPT", provider="openai", remote_name="flaky#scenario=status&status=503",
            base_url=f"http://127.0.0.1:{port}/v1", input_price_per_million=1, output_price_per_million=1,
        )
        FailoverLink.objects.create(model=flaky, fallback=ChatModel.objects.get(name=DEMO_NAME), position=1)
        web = app.start_daphne()
        context = browser.new_context(base_url=web.url, viewport={"width": 1280, "height": 860})
        page = context.new_page()
        log_in(page, user.username)
        page.select_option("#model-picker", "flaky")
        page.fill("#composer-input", "Hello <b>there</b> /words 12")
        page.press("#composer-input", "Enter")
        page.wait_for_function("() => document.querySelector('.msg-assistant')?.dataset.status === 'complete'", timeout=30_000)
        notice = page.inner_text(".msg-assistant .msg-notice")
        assert notice.startswith("Answered by Parley demo") and "because Flaky GPT was unavailable: its provider was overloaded" in notice
        page.click(".msg-assistant .msg-details-toggle")
        details = page.inner_text(".msg-assistant .msg-details")
        assert DEMO_NAME in details and "2 failed before this answer (flaky: overloaded; flaky: overloaded), none billed" in details

        page.reload()
        page.wait_for_selector(".msg-assistant[data-status=complete]")
        assert page.inner_text(".msg-assistant .msg-notice") == notice
        reply = Message.objects.get(role="assistant", conversation__owner=user)
        assert reply.model == DEMO_NAME and reply.routing["failover"]["from"] == "flaky"
        rows = list(UsageRecord.objects.filter(message=reply).order_by("attempt").values_list("attempt", "model", "outcome"))
        assert rows == [(1, "flaky", "failed"), (2, "flaky", "failed"), (3, DEMO_NAME, "complete")]
        context.close()
    finally:
        server.stop()
