"""A finished reply can be copied whole, as its Markdown source, and shows its details: the model,
tokens (marked when estimated), time to first token, duration and cost."""

import pytest

from tests.browser.test_chat_browser import LAST_REPLY, send, wait_for_status, wait_for_words

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_copy_takes_the_markdown_source_of_the_whole_reply(page, context):
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    send(page, "Quote **this** and `that`")
    wait_for_status(page, "complete")
    rendered = page.evaluate(f"{LAST_REPLY}.querySelector('.msg-body').innerText")
    assert "**this**" not in rendered  # drawn as Markdown on the page
    page.click(".msg-assistant .msg-copy")
    page.wait_for_selector(".msg-assistant .msg-copy:text('Copied')")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    reply_id = page.evaluate(f"{LAST_REPLY}.dataset.id")
    conversation = page.url.rstrip("/").rsplit("/", 1)[-1]
    stored = page.request.get(f"/api/conversations/{conversation}/").json()["messages"]
    assert copied == next(message["content"] for message in stored if str(message["id"]) == reply_id)
    assert "**this**" in copied and "`that`" in copied


def test_details_show_what_answered_and_what_it_cost(page):
    send(page, "Tell me something /words 30 /slow 10")
    wait_for_status(page, "complete")
    page.click(".msg-assistant .msg-details-toggle")
    details = page.inner_text(".msg-assistant .msg-details")
    assert "parley-demo" in details
    assert "in," in details and "out" in details
    assert "First token after" in details and "Duration" in details and "Cost" in details
    assert page.get_attribute(".msg-assistant .msg-details-toggle", "aria-expanded") == "true"
    page.click(".msg-assistant .msg-details-toggle")
    assert page.locator(".msg-assistant .msg-details").count() == 0
    # Drawn from the stored reply after a reload too, with the same figures.
    page.reload()
    page.wait_for_selector(".msg-assistant .msg-details-toggle")
    page.click(".msg-assistant .msg-details-toggle")
    assert page.inner_text(".msg-assistant .msg-details") == details


def test_a_stopped_reply_shows_estimated_tokens(page):
    send(page, "Go on /words 500 /slow 30")
    wait_for_words(page, 5)
    page.click("#stop-button")
    wait_for_status(page, "stopped")
    page.click(".msg-assistant .msg-details-toggle")
    assert "(estimated)" in page.inner_text(".msg-assistant .msg-details")
