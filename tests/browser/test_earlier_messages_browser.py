"""A long conversation opens with its newest messages; earlier ones load above without moving the view."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from chat.models import ChatModel, Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.live]

FIRST_SHOWN = "document.querySelector('#messages-inner .msg')"
EVIL = '<img src=x onerror="window.__pwned=1"> and [x](javascript:window.__pwned=2)'


def words(count: int) -> str:
    return " ".join(f"word{n}" for n in range(1, count + 1))


@pytest.fixture
def long_conversation(user) -> Conversation:
    """120 messages, "message 0" to "message 119"; the oldest reply carries markup that must stay inert."""
    conversation = Conversation.objects.create(owner=user, model=ChatModel.objects.get(name="parley-demo"), title="Long")
    # Written weeks ago: the plan's limits count the user's messages of this minute, day and month.
    start = timezone.now() - timedelta(days=40)
    Message.objects.bulk_create(
        Message(
            conversation=conversation, role="user" if index % 2 == 0 else "assistant",
            content=f"message {index}" + (f" **bold** {EVIL}" if index == 1 else ""), created=start + timedelta(minutes=index),
        )
        for index in range(120)
    )
    return conversation


def shown(page) -> list[str]:
    return page.eval_on_selector_all(
        "#messages-inner .msg .msg-body", "bodies => bodies.map(body => body.innerText.match(/message \\d+/)?.[0] ?? '')"
    )


def top_of(page, text: str) -> float:
    return page.evaluate(
        "text => [...document.querySelectorAll('#messages-inner .msg-body')].find(body => body.innerText.trim() === text)"
        ".getBoundingClientRect().top", text
    )


def test_earlier_messages_load_above_by_keyboard_and_the_view_stays(page, long_conversation):
    page.goto(f"/c/{long_conversation.pk}/")
    page.wait_for_selector(".msg")
    assert shown(page) == [f"message {index}" for index in range(70, 120)]
    assert page.evaluate("(m => m.scrollHeight - m.scrollTop - m.clientHeight)(document.getElementById('messages'))") < 5

    button = page.locator("#load-earlier")
    button.scroll_into_view_if_needed()
    button.focus()
    before = top_of(page, "message 70")
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => {FIRST_SHOWN}?.innerText.includes('message 20')")
    assert shown(page) == [f"message {index}" for index in range(20, 120)]
    assert abs(top_of(page, "message 70") - before) < 2, "the message that was on screen did not move"
    assert page.evaluate("document.activeElement.id") == "load-earlier", "focus stays on the control"

    page.keyboard.press("Enter")
    page.wait_for_function(f"() => {FIRST_SHOWN}?.innerText.includes('message 0')")
    assert shown(page) == [f"message {index}" for index in range(120)]
    assert page.locator("#load-earlier").count() == 0, "nothing is older than the first message"
    assert page.evaluate("document.activeElement.dataset.id") == page.evaluate(f"{FIRST_SHOWN}.dataset.id")

    # Older replies go through the same renderer and sanitizer as the rest.
    oldest_reply = page.locator(".msg-assistant").first
    assert oldest_reply.locator("strong").inner_text() == "bold"
    assert oldest_reply.locator("img, a[href^='javascript']").count() == 0
    assert '<img src=x onerror="window.__pwned=1">' in oldest_reply.inner_text()
    assert page.evaluate("window.__pwned") is None


def test_loading_earlier_messages_mid_reply_keeps_the_reply_streaming(page, long_conversation):
    page.goto(f"/c/{long_conversation.pk}/")
    page.wait_for_selector(".msg")
    page.fill("#composer-input", "/words 80 /slow 50")
    page.press("#composer-input", "Enter")
    last_reply = "[...document.querySelectorAll('.msg-assistant')].at(-1)"
    page.wait_for_function(f"() => ({last_reply}.innerText.match(/word\\d+/g) || []).length >= 5")
    assert page.evaluate(f"{last_reply}.dataset.status") == "streaming"
    page.click("#load-earlier")
    page.wait_for_function(f"() => {FIRST_SHOWN}?.innerText.includes('message 20')")
    page.wait_for_function(f"() => {last_reply}.dataset.status === 'complete'", timeout=30_000)
    assert page.evaluate(f"{last_reply}.querySelector('.msg-body').innerText").strip() == words(80)
    assert len(shown(page)) == 100 + 2  # the older page, the newest page, the new turn
    assert re.search(rf"/c/{long_conversation.pk}/$", page.url)
