"""The chat from the keyboard: Enter sends, Shift+Enter breaks the line, Esc stops the reply being
written (but only closes an open editor), the up arrow edits the last message, Ctrl+Shift+O starts
a new chat."""

import re

import pytest

from tests.browser.test_chat_browser import reply_status, wait_for_status, wait_for_words

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_escape_stops_and_ctrl_shift_o_starts_a_new_chat(page):
    page.fill("#composer-input", "first line")
    page.press("#composer-input", "Shift+Enter")
    page.type("#composer-input", "second line /words 400 /slow 30")
    assert page.locator(".msg-user").count() == 0  # Shift+Enter sent nothing
    page.press("#composer-input", "Enter")
    wait_for_words(page, 5)
    assert page.inner_text(".msg-user .msg-body").startswith("first line\nsecond line")
    page.keyboard.press("Escape")
    wait_for_status(page, "stopped")

    page.keyboard.press("ArrowUp")  # the composer is empty and focused: edit the last message
    page.wait_for_selector(".msg-editor textarea")
    page.keyboard.press("Escape")  # closes the editor only
    page.wait_for_selector(".msg-editor", state="detached")
    assert reply_status(page) == "stopped"

    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(re.compile(r"/$"))
    page.wait_for_selector("#welcome")
    assert page.inner_text("#chat-title") == "New chat"
