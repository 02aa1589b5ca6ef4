"""What a new user meets in their first minutes: each test here failed before its fix.

A rename form that another tab's send wiped, a Send button pushed off its row by the counter,
"New chat" turning into "New conversation", console errors in normal use, password errors under
the wrong field, Django's name on the admin, and a missing /favicon.ico.
"""

import pytest

from tests.browser.conftest import PASSWORD, log_in
from tests.browser.test_chat_browser import send, wait_for_status

pytestmark = [pytest.mark.browser, pytest.mark.live]


def console_errors(page) -> list[str]:
    found: list[str] = []
    page.on("console", lambda message: found.append(message.text) if message.type == "error" else None)
    return found


def test_a_rename_form_survives_a_send_and_a_title_in_another_tab(page, context, user):
    send(page, "First conversation /words 3")
    wait_for_status(page, "complete")
    item = page.locator("#conversation-list .conversation-item").first
    item.hover()
    item.locator("button[title=Rename]").click()
    page.fill(".rename-form input[name=title]", "Half typ")
    other = context.new_page()
    other.goto("/")
    other.wait_for_selector("#composer-input")
    send(other, "A second conversation /words 3")
    wait_for_status(other, "complete")
    page.wait_for_timeout(1500)  # the notices of the send and its end have reached the first tab
    assert page.input_value(".rename-form input[name=title]") == "Half typ"
    page.type(".rename-form input[name=title]", "ed")
    page.click(".rename-form button[type=submit]")
    page.wait_for_selector("#conversation-list .conversation-link:text('Half typed')")
    # The redraw that waited for the form comes after it: the other tab's conversation is listed.
    page.wait_for_selector("#conversation-list .conversation-link:text('A second conversation')")
    other.close()


@pytest.mark.parametrize("redraw_lands", ["after the form", "before the form"])
def test_a_redraw_in_flight_when_rename_is_pressed_does_not_take_the_form_away(page, user, redraw_lands):
    send(page, "Racing conversation /words 3")
    wait_for_status(page, "complete")
    page.wait_for_selector("#conversation-list .conversation-link:text('Racing conversation')")
    slow, fast = (1500, 0) if redraw_lands == "after the form" else (600, 1500)
    # Held in the page, not in a route handler, so that the test's own steps go on meanwhile.
    page.evaluate(
        """([slow, fast]) => {
          const open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
          XMLHttpRequest.prototype.open = function (method, url, ...rest) { this.parleyUrl = String(url); return open.call(this, method, url, ...rest); };
          XMLHttpRequest.prototype.send = function (body) {
            const redraw = this.parleyUrl.startsWith("/conversations/");
            if (redraw) window.parleyRedrawsSent = (window.parleyRedrawsSent || 0) + 1;
            setTimeout(() => send.call(this, body), redraw ? slow : this.parleyUrl.includes("/rename/") ? fast : 0);
          };
        }""",
        [slow, fast],
    )
    page.evaluate("document.body.dispatchEvent(new CustomEvent('parley:conversations-changed'))")
    page.wait_for_function("() => window.parleyRedrawsSent === 1")
    item = page.locator("#conversation-list .conversation-item").first
    item.hover()
    item.locator("button[title=Rename]").click()
    page.fill(".rename-form input[name=title]", "Renamed mid-redraw")
    page.wait_for_timeout(2500)  # both answers are in
    assert page.input_value(".rename-form input[name=title]") == "Renamed mid-redraw"
    page.click(".rename-form button[type=submit]")
    page.wait_for_selector("#conversation-list .conversation-link:text('Renamed mid-redraw')")
    page.wait_for_selector("#conversation-list .rename-form", state="detached")


@pytest.mark.parametrize("width", [1280, 820, 375])
def test_send_keeps_its_row_when_the_counter_shows(context, user, width):
    page = context.new_page()
    page.set_viewport_size({"width": width, "height": 800})
    log_in(page, user.username)
    limit = int(page.get_attribute("#chat", "data-max-chars"))
    page.fill("#composer-input", "x" * (limit - 5))
    page.wait_for_function("() => document.getElementById('counter').textContent.length > 0")
    send_box = page.locator("#send-button").bounding_box()
    task_box = page.locator("#task-button").bounding_box()
    attach_box = page.locator("#attach-button").bounding_box()
    assert send_box and task_box and attach_box
    page.screenshot(path=f"/tmp/parley-counter-{width}.png")
    assert abs(send_box["y"] - task_box["y"]) < 2 and abs(send_box["y"] + send_box["height"] / 2 - (attach_box["y"] + attach_box["height"] / 2)) < 4
    assert send_box["x"] + send_box["width"] <= width
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_the_header_says_new_chat_until_the_question_names_it(page):
    errors = console_errors(page)
    assert page.inner_text("#chat-title") == "New chat"
    send(page, "**Plan** a trip to Lisbon /words 3")
    page.wait_for_function("() => document.getElementById('chat-title').textContent === 'Plan a trip to Lisbon'")
    wait_for_status(page, "complete")
    page.wait_for_selector("#conversation-list .conversation-link:text('Plan a trip to Lisbon')")
    page.reload()
    page.wait_for_selector(".msg-assistant")
    assert page.inner_text("#chat-title") == "Plan a trip to Lisbon"
    page.click("#new-chat")
    page.wait_for_selector("#welcome")
    assert page.inner_text("#chat-title") == "New chat"
    page.wait_for_timeout(300)
    assert errors == []


def test_a_failed_or_control_only_chat_is_not_a_new_conversation_in_the_list(page):
    send(page, "/words 3")
    wait_for_status(page, "complete")
    page.wait_for_selector("#conversation-list .conversation-link:text('/words 3')")
    assert page.locator("#conversation-list .conversation-link:text('New')").count() == 0


def test_normal_use_logs_nothing_in_the_console(page, context):
    errors = console_errors(page)
    send(page, "Hello there /words 20 /slow 20")
    wait_for_status(page, "complete")
    other = context.new_page()
    other.goto("/")
    other.wait_for_selector("#composer-input")
    send(other, "From a second tab /words 3")
    wait_for_status(other, "complete")
    page.fill("#sidebar-q", "hel")
    page.wait_for_timeout(600)
    page.fill("#sidebar-q", "")
    page.wait_for_timeout(600)
    page.locator("#conversation-list .conversation-link").first.click()
    page.wait_for_selector(".msg-assistant")
    page.wait_for_timeout(500)
    other.close()
    assert errors == []


def test_sign_up_says_what_is_wrong_with_the_password_under_the_password(context):
    page = context.new_page()
    page.goto("/accounts/signup/")
    page.fill("#id_username", "shortpass")
    page.fill("#id_password1", "abc")
    page.fill("#id_password2", "abc")
    page.click("form button[type=submit]")
    page.wait_for_selector(".field-error, .errorlist")
    password_field = page.locator("#id_password1").locator("xpath=ancestor::*[contains(@class,'field')][1]")
    confirmation_field = page.locator("#id_password2").locator("xpath=ancestor::*[contains(@class,'field')][1]")
    assert "too short" in password_field.inner_text()
    assert "too short" not in confirmation_field.inner_text()


def test_the_admin_is_parleys_and_has_an_icon(context, django_user_model):
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    page = context.new_page()
    page.goto("/admin/login/")
    assert "Django" not in page.inner_text("#header") and "Parley admin" in page.inner_text("#header")
    assert "Django" not in page.title()
    icon = page.get_attribute("link[rel=icon]", "href")
    assert icon and page.request.get(icon).ok
    favicon = page.request.get("/favicon.ico")
    assert favicon.ok and favicon.headers["content-type"] in {"image/x-icon", "image/vnd.microsoft.icon"}


def test_admin_lists_fit_a_1280_px_screen(context, django_user_model):
    from billing.models import UsageRecord
    from chat.models import ChatModel

    admin_user = django_user_model.objects.create_superuser("root", password=PASSWORD)
    for n in range(3):
        UsageRecord.objects.create(
            user=admin_user, kind="reply", provider="openai", model=f"a-rather-long-model-name-from-a-local-server-{n}",
            prompt_tokens=123456, completion_tokens=65432, estimated=True, cost_usd="12.345678", outcome="failed",
            error_code="provider_unavailable", duration_ms=123456,
        )
    ChatModel.objects.create(name="a-very-long-model-identifier/with-a-path:and-a-tag", label="Long", provider="openai")
    page = context.new_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in_admin(page)
    for url in ("/admin/billing/usagerecord/", "/admin/chat/chatmodel/", "/admin/chat/message/", "/admin/accounts/plan/"):
        page.goto(url)
        page.wait_for_selector("#changelist")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280, f"{url} is {width}px wide"
        results = page.locator("#changelist .results")
        if results.count():
            overflow = results.evaluate("(element) => element.scrollWidth - element.clientWidth")
            page.screenshot(path=f"/tmp/admin-{url.strip('/').replace('/', '-')}.png")
            assert overflow <= 1, f"{url}: the table is {overflow}px wider than its column"


def log_in_admin(page) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_selector("#site-name")
