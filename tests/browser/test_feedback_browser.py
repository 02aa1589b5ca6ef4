"""A finished reply is rated with a thumb and an optional comment; the rating is there again after a
reload, the other thumb switches it and the pressed one takes it back."""

import pytest

from support.models import Feedback
from tests.browser.test_accessibility_browser import serious_violations
from tests.browser.test_chat_browser import LAST_REPLY, send, wait_for_status

pytestmark = [pytest.mark.browser, pytest.mark.live]

UP = ".msg-assistant .msg-rate-up"
DOWN = ".msg-assistant .msg-rate-down"


def pressed(page, selector: str) -> str | None:
    return page.get_attribute(selector, "aria-pressed")


def wait_pressed(page, selector: str, value: str) -> None:
    page.wait_for_selector(f'{selector}[aria-pressed="{value}"]')


def test_thumbs_down_with_a_comment_stays_after_a_reload_switches_and_clears(page):
    send(page, "Tell me about tides /words 20")
    wait_for_status(page, "complete")
    reply_id = int(page.evaluate(f"{LAST_REPLY}.dataset.id"))
    # Named for screen readers, and not pressed until rated.
    assert page.get_by_role("button", name="Good reply").count() == 1
    assert page.get_by_role("button", name="Bad reply").count() == 1
    assert (pressed(page, UP), pressed(page, DOWN)) == ("false", "false")

    page.get_by_role("button", name="Bad reply").click()
    wait_pressed(page, DOWN, "true")
    comment = page.get_by_label("What was wrong? (optional)")
    assert serious_violations(page) == []  # the thumbs and the open form
    comment.fill("It never mentioned the moon.")
    page.click(".msg-feedback-form button[type=submit]")
    page.wait_for_selector(".msg-feedback-form", state="detached")
    stored = Feedback.objects.get(message_id=reply_id)
    assert (stored.rating, stored.comment) == (-1, "It never mentioned the moon.")

    page.reload()
    wait_pressed(page, DOWN, "true")
    assert pressed(page, UP) == "false"
    page.click(".msg-assistant .msg-feedback-comment")  # the comment is there to edit
    assert page.input_value(".msg-feedback-form textarea") == "It never mentioned the moon."
    page.click(".msg-feedback-form button:text('Cancel')")
    page.wait_for_selector(".msg-feedback-form", state="detached")

    page.get_by_role("button", name="Good reply").click()
    wait_pressed(page, UP, "true")
    assert pressed(page, DOWN) == "false"
    page.keyboard.press("Escape")  # the form opened again; Escape closes it and keeps the rating
    page.wait_for_selector(".msg-feedback-form", state="detached")
    assert Feedback.objects.get(message_id=reply_id).rating == 1

    page.get_by_role("button", name="Good reply").click()
    wait_pressed(page, UP, "false")
    assert pressed(page, DOWN) == "false"
    assert page.locator(".msg-feedback-form").count() == 0
    assert not Feedback.objects.filter(message_id=reply_id).exists()
    page.reload()
    page.wait_for_selector(UP)
    assert (pressed(page, UP), pressed(page, DOWN)) == ("false", "false")
