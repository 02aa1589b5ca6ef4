"""The support console in a real browser: filter, search, open a transcript, reveal one message
with a reason, export; the markup of a reply stays inert."""

import os

import pytest
from django.contrib.auth.models import Group

from chat.models import ChatModel, Conversation, Message
from support.models import SUPPORT_GROUP, AuditEvent
from tests.browser.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.live]

SECRET = "dora.smith@example.net"
EVIL = '<img src=x onerror="window.__pwned=1"> **bold words**'


@pytest.fixture
def staff_page(context, django_user_model):
    staff = django_user_model.objects.create_user("sue", password=PASSWORD)
    staff.groups.add(Group.objects.get(name=SUPPORT_GROUP))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/accounts/login/")
    page.fill("#id_username", "sue")
    page.fill("#id_password", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url("**/")
    yield page
    assert not errors, f"JavaScript errors: {errors}"


def shoot(page, name: str) -> None:
    """PARLEY_SCREENSHOTS=<folder> keeps a picture of each step, to look at."""
    if os.environ.get("PARLEY_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["PARLEY_SCREENSHOTS"], f"{name}.png"), full_page=True)


def chat(owner, title: str, question: str, answer: str) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title=title, title_is_auto=False, model=ChatModel.objects.get(name="parley-demo"))
    Message.objects.create(conversation=conversation, role="user", content=question)
    Message.objects.create(conversation=conversation, role="assistant", content=answer, model="parley-demo", provider="demo")
    return conversation


def test_support_finds_reads_reveals_and_exports(staff_page, user, django_user_model, tmp_path):
    page = staff_page
    other = django_user_model.objects.create_user("olga", password=PASSWORD)
    wanted = chat(user, "Invoice question", f"Please send the invoice to {SECRET}", f"Sent. {EVIL}")
    chat(other, "Weather", "Will it rain?", "Maybe an invoice of clouds.")

    page.goto("/support/")
    assert page.locator(".support-list tbody tr").count() == 2
    shoot(page, "support-list")
    page.fill("input[name=user]", user.username)
    page.click(".support-filters button[type=submit]")
    page.wait_for_url("**user=walter**")
    assert page.locator(".support-list tbody tr").count() == 1

    page.fill("input[name=user]", "")
    page.fill("input[name=q]", "invoice")
    page.click(".support-filters button[type=submit]")
    page.wait_for_selector(".hits li")
    shoot(page, "support-search")
    assert page.locator(".hits li").count() == 2  # walter's question and olga's reply
    assert page.locator(".hits mark").first.inner_text().lower() == "invoice"
    assert SECRET not in page.content()

    page.click(f".hits a[href^='/support/c/{wanted.pk}/']")
    page.wait_for_selector(".transcript .msg-user")
    user_body = page.locator(".transcript .msg-user .msg-body")
    assert "[email]" in user_body.inner_text() and SECRET not in page.content()
    reply = page.locator(".transcript .msg-assistant .msg-body")
    assert reply.locator("strong").inner_text() == "bold words"  # drawn as Markdown
    assert page.evaluate("() => window.__pwned") is None
    shoot(page, "support-transcript")

    page.click(".transcript .msg-user .reveal summary")
    page.fill(".transcript .msg-user .reveal input[name=reason]", "Customer asked to confirm the invoice address")
    page.click(".transcript .msg-user .reveal button[type=submit]")
    page.wait_for_selector(".revealed-note")
    assert SECRET in user_body.inner_text()
    event = AuditEvent.objects.filter(action="reveal").get()
    assert event.reason == "Customer asked to confirm the invoice address" and event.actor_name == "sue"

    with page.expect_download() as download:
        page.click("a[href$='export.md']")
    saved = tmp_path / "t.md"
    download.value.save_as(saved)
    text = saved.read_text()
    assert "Invoice question" in text and "[email]" in text and SECRET not in text

    page.reload()  # a reveal lasts for that page view only
    page.wait_for_selector(".transcript .msg-user")
    assert SECRET not in page.content()
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert actions[:2] == ["list", "list"] and "search" in actions and actions.count("view") == 2 and "export" in actions
