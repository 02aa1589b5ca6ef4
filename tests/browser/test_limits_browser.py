"""Plan limits on the chat page: the banner with its live countdown, the paused send box, the meter."""

import re
import time
from decimal import Decimal

import pytest

from accounts.models import Plan
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.live]

LAST_REPLY = "[...document.querySelectorAll('.msg-assistant')].at(-1)"


@pytest.fixture
def free_plan(transactional_db):
    """The default plan with known limits (the live app reads plans fresh on every call in tests)."""
    plan, _ = Plan.objects.update_or_create(name="Free", defaults={"is_default": True})
    Plan.objects.filter(pk=plan.pk).update(
        requests_per_minute=None, requests_per_day=300, concurrent_replies=None, tokens_per_day=200_000,
        tokens_per_month=None, cost_per_month=Decimal("2.00"), max_output_tokens=None,
    )
    plan.refresh_from_db()
    return plan


def send_and_finish(page, text: str) -> None:
    count = page.locator(".msg-assistant").count()
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")
    page.wait_for_function(f"() => document.querySelectorAll('.msg-assistant').length > {count}")
    page.wait_for_function(f"() => {LAST_REPLY}.dataset.status === 'complete'")


def countdown(page) -> int:
    text = page.inner_text("#limit-countdown")
    match = re.fullmatch(r"Resets in (\d+):(\d\d)", text)
    assert match, f"a m:ss countdown, not {text!r}"
    return int(match[1]) * 60 + int(match[2])


@pytest.fixture
def one_a_minute(free_plan):
    Plan.objects.filter(pk=free_plan.pk).update(requests_per_minute=1)
    return free_plan


def test_a_refused_send_shows_the_limit_with_a_live_countdown_and_pauses_sending(one_a_minute, page):
    while time.time() % 60 > 45:  # the countdown must not reach the minute's end before the test has read it
        time.sleep(0.5)
    page.clock.install()  # runs in real time; lets the test jump to the reset below
    page.reload()
    send_and_finish(page, "first /words 3")
    page.fill("#composer-input", "second message, kept while waiting")
    page.press("#composer-input", "Enter")
    page.wait_for_selector("#limit-banner:not([hidden])")
    assert page.inner_text("#limit-text") == "You have reached your plan's limit of 1 message a minute."
    first = countdown(page)
    assert 1 <= first <= 60
    page.clock.run_for(2000)
    assert countdown(page) < first, "the countdown ticks"
    assert page.is_disabled("#send-button")
    page.press("#composer-input", "Enter")  # pressing Enter while paused sends nothing
    time.sleep(0.5)
    assert page.locator(".msg-user").count() == 1
    assert page.input_value("#composer-input") == "second message, kept while waiting"
    assert not page.locator("#composer-error").is_visible(), "the banner says it; no second, plainer message"
    page.screenshot(path="/tmp/parley-limit-banner.png")

    # An admin raises the limit; once the countdown ends the page looks again and sending resumes.
    Plan.objects.filter(pk=one_a_minute.pk).update(requests_per_minute=10)
    page.clock.fast_forward(61_000)
    page.wait_for_selector("#limit-banner", state="hidden")
    assert page.is_enabled("#send-button")
    send_and_finish(page, "now it goes /words 2")
    assert page.locator(".msg-user").count() == 2


def test_the_meter_shows_what_is_left_today_and_this_month(free_plan, page):
    page.reload()
    page.wait_for_selector("#usage-meter:not([hidden])")
    before = page.inner_text("#usage-meter")
    assert "Today: 300 messages · 200K tokens left" in before
    assert "This month: $2.00 left" in before
    send_and_finish(page, "/words 40")
    page.wait_for_function("() => !document.querySelector('#usage-meter').innerText.includes('300 messages')")
    after = page.inner_text("#usage-meter")
    assert "Today: 299 messages" in after and "This month: $2.00 left" in after  # the demo model is free
    detail = page.get_attribute(".usage-item", "title")  # exact numbers behind the rounded ones
    assert "1 used of 300 messages a day" in detail
    tokens_used = re.search(r"([\d,]+) used of 200,000 tokens a day", detail)
    assert tokens_used and int(tokens_used[1].replace(",", "")) > 40
    page.screenshot(path="/tmp/parley-limits.png")


def test_a_spent_budget_or_a_suspension_shows_when_the_page_opens(context, free_plan, user):
    Plan.objects.filter(pk=free_plan.pk).update(requests_per_day=0)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, user.username)
    page.wait_for_selector("#limit-banner:not([hidden])")
    assert "limit of 0 messages a day" in page.inner_text("#limit-text")
    assert re.fullmatch(r"Resets in \d+:\d\d:\d\d|Resets in \d+:\d\d", page.inner_text("#limit-countdown"))
    assert page.is_disabled("#send-button")

    type(user).objects.filter(pk=user.pk).update(suspended=True)
    page.reload()
    page.wait_for_selector("#limit-banner:not([hidden])")
    assert "suspended" in page.inner_text("#limit-text") and page.inner_text("#limit-countdown") == ""
    assert page.is_disabled("#send-button")
    assert not errors, f"JavaScript errors: {errors}"


def test_replies_at_a_time_say_to_wait_for_one_to_finish(free_plan, page, context):
    Plan.objects.filter(pk=free_plan.pk).update(concurrent_replies=1)
    page.fill("#composer-input", "long one /words 400 /slow 30")
    page.press("#composer-input", "Enter")
    page.wait_for_function(f"() => {LAST_REPLY}?.dataset.status === 'streaming'")
    other = context.new_page()  # a second tab, on a new conversation
    other.goto("/")
    other.fill("#composer-input", "meanwhile")
    other.press("#composer-input", "Enter")
    other.wait_for_selector("#limit-banner:not([hidden])")
    assert other.inner_text("#limit-text") == (
        "You have reached your plan's limit of 1 reply at a time. Wait for a reply to finish."
    )
    assert re.fullmatch(r"Try again in 0:0\d", other.inner_text("#limit-countdown"))
    page.click("#stop-button")
    page.wait_for_function(f"() => {LAST_REPLY}?.dataset.status === 'stopped'")
    other.wait_for_selector("#limit-banner", state="hidden", timeout=10_000)  # the short pause ends by itself
    other.press("#composer-input", "Enter")
    other.wait_for_function(f"() => {LAST_REPLY}?.dataset.status === 'complete'")
    assert other.locator(".msg-user").count() == 1
