"""Branches in the page: edit a message, regenerate a reply, switch between versions ("1 / 2"),
reload and see the same branch; up-arrow edits the last message; a failed reply offers Retry."""

import pytest

from chat.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.live]

LAST = "[...document.querySelectorAll('#messages-inner > .msg-assistant')].at(-1)"


def send(page, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def wait_until_finished(page, count: int) -> None:
    """`count` replies shown, the last one finished."""
    page.wait_for_function(
        f"() => document.querySelectorAll('#messages-inner > .msg-assistant').length === {count}"
        f" && ['complete', 'failed'].includes({LAST}?.dataset.status)",
        timeout=30_000,
    )


def shown(page) -> list[str]:
    return [text.strip() for text in page.locator("#messages-inner > .msg .msg-body").all_inner_texts()]


def test_edit_regenerate_switch_and_reload_keep_the_branch(page):
    send(page, "first /words 2")
    wait_until_finished(page, 1)
    send(page, "second /words 3")
    wait_until_finished(page, 2)

    other = page.context.new_page()  # another tab on the same conversation
    other.goto(page.url)
    other.wait_for_selector("#messages-inner > .msg-assistant[data-status=complete] >> nth=1")

    second = page.locator("#messages-inner > .msg-user").nth(1)
    second.get_by_role("button", name="Edit message").click()
    editor = second.get_by_role("textbox", name="Edit message")
    assert editor.input_value() == "second /words 3"
    editor.fill("second again /words 4")
    editor.press("Escape")  # Escape cancels: nothing changes
    assert not second.locator(".msg-editor").count() and shown(page)[2] == "second /words 3"
    second.get_by_role("button", name="Edit message").click()
    second.get_by_role("textbox", name="Edit message").fill("second again /words 4")
    second.get_by_role("button", name="Save & send").click()
    page.wait_for_function("() => [...document.querySelectorAll('#messages-inner > .msg-user')].at(-1)?.innerText.includes('second again')")
    wait_until_finished(page, 2)
    assert shown(page) == ["first /words 2", "word1 word2", "second again /words 4", "word1 word2 word3 word4"]
    edited = page.locator("#messages-inner > .msg-user").nth(1)
    assert edited.locator(".branch-position").inner_text() == "2 / 2"
    # The other tab follows the new branch as it follows a send.
    other.wait_for_function("() => [...document.querySelectorAll('#messages-inner > .msg-user')].at(-1)?.innerText.includes('second again')")
    wait_until_finished(other, 2)
    assert shown(other) == shown(page)
    other.close()

    # Regenerate the last reply: a second version of it.
    page.locator("#messages-inner > .msg-assistant").last.get_by_role("button", name="Regenerate reply").click()
    page.wait_for_function(f"() => {LAST}?.querySelector('.branch-position')?.innerText === '2 / 2'")
    wait_until_finished(page, 2)
    assert len(shown(page)) == 4

    # Back to the first version of the second message: its own reply comes back.
    edited.get_by_role("button", name="Previous version").click()
    page.wait_for_function("() => [...document.querySelectorAll('#messages-inner > .msg-user')].at(-1)?.innerText.includes('second /words 3')")
    assert shown(page) == ["first /words 2", "word1 word2", "second /words 3", "word1 word2 word3"]
    assert page.locator("#messages-inner > .msg-user").nth(1).locator(".branch-position").inner_text() == "1 / 2"
    page.screenshot(path="/tmp/parley-branches.png")

    page.reload()
    page.wait_for_selector("#messages-inner > .msg-assistant")
    assert shown(page) == ["first /words 2", "word1 word2", "second /words 3", "word1 word2 word3"]
    assert page.locator("#messages-inner > .msg-user").nth(1).locator(".branch-position").inner_text() == "1 / 2"

    # A send continues the branch shown.
    send(page, "third /words 1")
    wait_until_finished(page, 3)
    assert shown(page)[2:] == ["second /words 3", "word1 word2 word3", "third /words 1", "word1"]
    page.get_by_role("button", name="Next version").first.click()
    page.wait_for_function("() => document.querySelectorAll('#messages-inner > .msg').length === 4")
    assert shown(page)[2] == "second again /words 4"
    assert page.locator("#messages-inner > .msg-assistant").last.locator(".branch-position").inner_text() == "2 / 2"


def test_up_arrow_edits_the_last_message_and_a_failed_reply_offers_retry(page):
    send(page, "please /fail overloaded")
    wait_until_finished(page, 1)
    reply = page.locator("#messages-inner > .msg-assistant").last
    retry = reply.get_by_role("button", name="Retry this reply")
    assert retry.is_visible()
    retry.click()
    page.wait_for_function(f"() => {LAST}?.querySelector('.branch-position')?.innerText === '2 / 2'")
    wait_until_finished(page, 1)
    conversation = Conversation.objects.get()
    assert Message.objects.filter(conversation=conversation, role="assistant").count() == 2

    page.focus("#composer-input")
    page.keyboard.press("ArrowUp")
    editor = page.get_by_role("textbox", name="Edit message")
    assert editor.is_visible() and editor.input_value() == "please /fail overloaded"
    editor.fill("now /words 2")
    editor.press("Enter")
    wait_until_finished(page, 1)
    page.wait_for_function(f"() => {LAST}?.dataset.status === 'complete'")
    assert shown(page) == ["now /words 2", "word1 word2"]
    assert page.locator("#messages-inner > .msg-user .branch-position").inner_text() == "2 / 2"
