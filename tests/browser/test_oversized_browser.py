"""An oversized message in the browser: refused in plain words, typed text kept, nothing stored."""

import pytest

from chat.models import Message
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.live]

# A page loaded before an admin lowered the limit still believes a longer message fits.
STALE_LIMIT = """new MutationObserver((_, observer) => {
  const chat = document.querySelector("[data-max-chars]");
  if (chat) { chat.dataset.maxChars = "99000"; observer.disconnect(); }
}).observe(document, {childList: true, subtree: true});"""


def test_a_message_over_the_limit_is_refused_on_the_page_in_plain_words(page, user):
    page.fill("#composer-input", "x" * 32_001)
    page.press("#composer-input", "Enter")
    error = page.locator("#composer-error")
    error.wait_for(state="visible")
    assert "32,001 characters long; the limit is 32,000" in error.inner_text()
    assert len(page.input_value("#composer-input")) == 32_001  # the typed text is kept
    assert not Message.objects.filter(conversation__owner=user).exists()


def test_the_servers_refusal_of_an_oversized_message_is_shown_in_plain_words(context, user):
    context.add_init_script(STALE_LIMIT)
    page = context.new_page()
    log_in(page, user.username)
    page.fill("#composer-input", "y" * 40_000)
    page.press("#composer-input", "Enter")
    error = page.locator("#composer-error")
    error.wait_for(state="visible")
    assert "40,000 characters long; the limit is 32,000" in error.inner_text()
    assert len(page.input_value("#composer-input")) == 40_000 and page.is_enabled("#send-button")
    assert not Message.objects.filter(conversation__owner=user).exists()
