"""Task cards in a real browser: an agent run started from the composer, followed live, rebuilt after
a reload, approved from another tab, cancelled, and its model output kept inert.

The demo model follows a fixed plan (providers/demo_plan.py): search, calculate, write a report,
e-mail it when the goal names an address and the user may (an approval first), then answer;
`/slow MS` paces every step so that a run stays in flight long enough to reload or cancel it.
"""

import re
import time

import pytest

from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.live]

CARD = ".task-card"
EMAIL_GOAL = "Sum up what we said about budgets and e-mail it to ada@example.com /slow 150"


def card_status(page, nth: int = -1) -> str:
    return page.evaluate(f"[...document.querySelectorAll('{CARD}')].at({nth})?.dataset.status ?? ''")


def wait_for_card_status(page, status: str, nth: int = -1, timeout: float = 30_000) -> None:
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{CARD}')].at({nth})?.dataset.status === {status!r}", timeout=timeout
    )


def step_indexes(page) -> list[int]:
    return page.evaluate(f"[...document.querySelectorAll('{CARD} .task-step')].map((step) => Number(step.dataset.index))")


def progress_value(page) -> float:
    return page.evaluate(f"document.querySelector('{CARD} progress')?.value ?? -1")


def test_a_task_is_followed_through_a_reload_and_approved_from_another_tab(page, context, user):
    from django.contrib.auth.models import Permission

    from agents.models import AgentRun, AgentStep

    user.user_permissions.add(Permission.objects.get(codename="use_email_tool"))
    elsewhere = context.new_page()  # a second tab on a new chat: it hears of the approval by a notice
    elsewhere.goto("/")
    elsewhere.wait_for_function("() => document.getElementById('connection').dataset.status === 'open'")

    page.fill("#composer-input", EMAIL_GOAL)
    page.click("#task-button")
    page.wait_for_selector(CARD)
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    assert page.input_value("#composer-input") == ""
    assert page.inner_text(f"{CARD} .task-goal") == EMAIL_GOAL
    assert page.inner_text("#chat-title") == EMAIL_GOAL[:80]
    run_id = page.get_attribute(CARD, "data-run")

    seen = [progress_value(page)]
    deadline = time.monotonic() + 15
    while seen[-1] < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
        seen.append(progress_value(page))
    assert seen[0] < seen[-1] and seen == sorted(seen), f"the bar fills as steps finish: {seen}"
    before = step_indexes(page)
    assert before and card_status(page) == "running"

    page.reload()
    page.wait_for_selector(CARD)
    assert page.get_attribute(CARD, "data-run") == run_id and page.locator(CARD).count() == 1
    page.wait_for_function(f"() => document.querySelectorAll('{CARD} .task-step').length > {len(before)}")
    wait_for_card_status(page, "awaiting_approval")
    indexes = step_indexes(page)
    assert indexes == list(range(1, len(indexes) + 1)), f"every step once, in order: {indexes}"
    approval = page.locator(f"{CARD} .task-approval")
    assert approval.is_visible()
    assert '"to": "ada@example.com"' in approval.locator("pre").inner_text()
    assert progress_value(page) >= seen[-1]
    page.wait_for_timeout(300)  # the step's expiry comes with the run's stored state
    page.screenshot(path="/tmp/parley-task-approval.png")

    banner = elsewhere.locator(".run-notice")
    banner.wait_for()
    assert "waiting for your approval" in banner.inner_text()
    banner.locator("a").click()
    elsewhere.wait_for_url(page.url)
    elsewhere.locator(f"{CARD} .task-approval button:text('Approve')").click()

    wait_for_card_status(page, "succeeded")
    wait_for_card_status(elsewhere, "succeeded")
    assert not page.locator(f"{CARD} .task-approval").is_visible()
    assert not page.locator(f"{CARD} .task-cancel").is_visible()
    result = page.locator(f"{CARD} .task-result")
    assert result.inner_text().startswith("Done in 4 steps")  # search, calculate, report, e-mail
    assert result.locator("li").count() == 4 and result.locator("li code").count() == 4, "rendered as Markdown"
    page.wait_for_selector(f"{CARD} .task-step[data-kind=approval] .task-step-body:has-text('Approved by walter')", state="attached")
    indexes = step_indexes(page)
    assert indexes == list(range(1, len(indexes) + 1))

    email = AgentStep.objects.get(run_id=run_id, kind="tool", tool="send_email")
    assert email.status == "succeeded" and email.arguments["to"] == "ada@example.com"
    assert AgentRun.objects.get(pk=run_id).status == "succeeded"

    page.click(f"{CARD} .task-log > summary")
    page.locator(f"{CARD} .task-step[data-kind=tool] summary").first.click()
    page.set_viewport_size({"width": 1200, "height": 1500})  # the whole card, log open
    page.screenshot(path="/tmp/parley-task-done.png")

    with page.expect_download() as download:
        page.locator(f"{CARD} .task-file").first.click()
    assert download.value.suggested_filename.endswith(".md")
    with open(download.value.path(), encoding="utf-8") as report:
        assert report.read().startswith("# ")


def test_task_command_cancel_and_inert_model_output_on_a_phone(context, user):
    from agents.models import AgentRun
    from chat.models import ChatModel, Conversation, Message

    phone = context.new_page()
    errors: list[str] = []
    phone.on("pageerror", lambda error: errors.append(str(error)))
    phone.set_viewport_size({"width": 375, "height": 740})
    log_in(phone, user.username)
    conversation = Conversation.objects.create(owner=user, model=ChatModel.objects.get(name="parley-demo"), title="Notes")
    # The task's search finds this message and its final answer quotes it: model output with markup.
    Message.objects.create(conversation=conversation, role="user", content="Zanzibarxyz said `<img src=x onerror=window.__pwned=1>` once")
    Message.objects.create(conversation=conversation, role="assistant", content="Noted.")
    phone.goto(f"/c/{conversation.pk}/")

    phone.fill("#composer-input", "/task Count to a thousand, slowly /slow 400")
    phone.press("#composer-input", "Enter")
    phone.wait_for_selector(f"{CARD} .task-step", state="attached")  # in the closed log
    assert phone.input_value("#composer-input") == ""
    assert phone.inner_text(f"{CARD} .task-goal") == "Count to a thousand, slowly /slow 400"
    phone.click(f"{CARD} .task-cancel")
    wait_for_card_status(phone, "cancelled")
    assert phone.text_content(f"{CARD} .task-state") == "Cancelled"
    assert not phone.is_visible(f"{CARD} .task-cancel") and not phone.is_visible(f"{CARD} progress")
    steps = step_indexes(phone)
    time.sleep(1)
    assert step_indexes(phone) == steps, "no step after the cancel"
    assert AgentRun.objects.get(pk=phone.get_attribute(CARD, "data-run")).status == "cancelled"

    goal = "Find Zanzibarxyz <img src=y onerror=window.__pwned=2> /slow 20"
    phone.fill("#composer-input", f"/task {goal}")
    phone.press("#composer-input", "Enter")
    phone.wait_for_function(f"() => document.querySelectorAll('{CARD}').length === 2")
    wait_for_card_status(phone, "succeeded")
    phone.wait_for_timeout(300)  # let any onerror that might fire, fire
    assert phone.evaluate("window.__pwned") is None
    assert phone.locator(f"{CARD} img, {CARD} script").count() == 0
    assert phone.inner_text(f"{CARD} >> nth=-1 >> .task-goal") == goal
    assert "<img src=x onerror=window.__pwned=1>" in phone.inner_text(f"{CARD} >> nth=-1 >> .task-result")
    phone.click(f"{CARD} >> nth=-1 >> .task-log > summary")
    report_step = phone.locator(f"{CARD} >> nth=-1 >> .task-step:has-text('Writing the report')")
    report_step.locator("summary").click()
    assert "<img src=y onerror=window.__pwned=2>" in report_step.locator("pre").first.inner_text()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375, "nothing overflows sideways"
    phone.screenshot(path="/tmp/parley-task-phone.png", full_page=True)

    phone.reload()  # rebuilt from the database, in the conversation's order
    phone.wait_for_function(f"() => document.querySelectorAll('{CARD}').length === 2")
    order = phone.evaluate("[...document.querySelectorAll('#messages-inner > .msg, #messages-inner > .task-card')]"
                           ".map((item) => item.className.split(' ')[0] + ':' + (item.dataset.status || ''))")
    assert order == ["msg:", "msg:complete", "task-card:cancelled", "task-card:succeeded"], order
    assert phone.evaluate("window.__pwned") is None
    assert not errors, f"JavaScript errors: {errors}"


def test_stored_runs_take_their_place_among_messages_and_explain_their_endings(page, user):
    """Ended runs are drawn from the database alone: where they belong in time, with their errors."""
    from datetime import timedelta

    from django.utils import timezone

    from agents.models import AgentRun, AgentStep
    from chat.models import ChatModel, Conversation, Message

    conversation = Conversation.objects.create(owner=user, model=ChatModel.objects.get(name="parley-demo"), title="Old")
    start = timezone.now() - timedelta(hours=1)
    at = lambda minutes: start + timedelta(minutes=minutes)  # noqa: E731
    Message.objects.create(conversation=conversation, role="user", content="first question", created=at(0))
    Message.objects.create(conversation=conversation, role="assistant", content="first answer", created=at(1))
    failed = AgentRun.objects.create(
        owner=user, conversation=conversation, goal="Mail the plan to bob@example.com", model="parley-demo",
        status="failed", error_code="run_limit", error_text="The run reached its limit of 3 steps.", event_seq=12,
        created=at(2), started=at(2), finished=at(3),
    )
    AgentStep.objects.create(run=failed, index=1, kind="model", title="Planning", status="succeeded", finished=at(2))
    AgentStep.objects.create(
        run=failed, index=2, kind="tool", title="Sending an e-mail", tool="send_email", status="refused",
        arguments={"to": "bob@example.com"}, error="This account may not use the send_email tool.", finished=at(2),
    )
    AgentStep.objects.create(
        run=failed, index=3, kind="tool", title="Calculating", tool="calculate", status="failed",
        arguments={"expression": "1 / 0"}, error="Division by zero.", finished=at(3),
    )
    AgentRun.objects.create(
        owner=user, conversation=conversation, goal="Count the words", model="parley-demo", status="interrupted",
        event_seq=4, created=at(4), started=at(4), finished=at(5),
    )
    Message.objects.create(conversation=conversation, role="user", content="second question", created=at(6))
    Message.objects.create(conversation=conversation, role="assistant", content="second answer", created=at(7))

    page.goto(f"/c/{conversation.pk}/")
    page.wait_for_function(f"() => document.querySelectorAll('{CARD}').length === 2")
    order = page.evaluate("[...document.querySelectorAll('#messages-inner > .msg, #messages-inner > .task-card')]"
                          ".map((item) => item.querySelector('.msg-body, .task-goal').textContent.trim())")
    assert order == ["first question", "first answer", "Mail the plan to bob@example.com", "Count the words",
                     "second question", "second answer"], order

    broken = page.locator(f"{CARD}[data-status=failed]")
    assert broken.locator(".task-error").inner_text() == "The run reached its limit of 3 steps."
    assert not broken.locator("progress").is_visible() and not broken.locator(".task-cancel").is_visible()
    broken.locator(".task-log > summary").click()
    refused = broken.locator(".task-step[data-index='2']")
    assert refused.locator(".task-step-status").inner_text() == "Refused"
    assert refused.locator(".task-step-error").inner_text() == "This account may not use the send_email tool."
    assert broken.locator(".task-step[data-index='3'] .task-step-error").inner_text() == "Division by zero."
    refused.locator("summary").click()
    assert '"to": "bob@example.com"' in refused.locator("pre").inner_text()

    lost = page.locator(f"{CARD}[data-status=interrupted]")
    assert "stopped before it finished" in lost.locator(".task-error").inner_text()


def test_stop_and_run_as_task_stay_on_the_composers_row_while_a_reply_streams(page, user):
    page.set_viewport_size({"width": 1200, "height": 900})
    page.fill("#composer-input", "A long one /words 400 /slow 20")
    page.click("#send-button")
    page.wait_for_selector("#stop-button:not([hidden])")
    tops = page.evaluate(
        "['#stop-button', '#task-button'].map((s) => Math.round(document.querySelector(s).getBoundingClientRect().top))"
    )
    assert tops[0] == tops[1], tops
