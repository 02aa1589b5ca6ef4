"""The chat page in a real browser: streaming, reload and second tab, stop, safe rendering, phones.

The demo model makes replies predictable: `/words N` answers exactly "word1 … wordN" and `/slow MS`
paces them, so a reply stays in flight long enough to reload, stop or follow it.
"""

import re
import time

import pytest

from tests.browser.conftest import PASSWORD, log_in

pytestmark = [pytest.mark.browser, pytest.mark.live]

LAST_REPLY = "[...document.querySelectorAll('.msg-assistant')].at(-1)"


def words(count: int) -> str:
    return " ".join(f"word{n}" for n in range(1, count + 1))


def send(page, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")
    page.wait_for_selector(".msg-assistant")


def reply_text(page) -> str:
    return page.evaluate(f"{LAST_REPLY}?.querySelector('.msg-body').innerText ?? ''").strip()


def reply_status(page) -> str:
    return page.evaluate(f"{LAST_REPLY}?.dataset.status ?? ''")


def wait_for_status(page, status: str, timeout: float = 30_000) -> None:
    page.wait_for_function(f"() => {LAST_REPLY}?.dataset.status === {status!r}", timeout=timeout)


def wait_for_words(page, count: int) -> None:
    page.wait_for_function(
        f"() => ({LAST_REPLY}?.querySelector('.msg-body').innerText.match(/word\\d+/g) || []).length >= {count}"
    )


def test_sign_up_then_sign_in_again(context):
    page = context.new_page()
    page.goto("/")
    assert "/accounts/login/" in page.url  # anonymous visitors land on the login page
    page.click("text=Create an account")
    page.fill("#id_username", "newcomer")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_selector("#composer-input")
    page.click(".sidebar-foot summary")
    page.click("text=Log out")
    page.wait_for_url("**/accounts/login/")
    log_in(page, "newcomer")
    assert page.inner_text(".sidebar-foot .menu-name") == "newcomer"


def test_reply_grows_in_steps_and_gets_a_url(page):
    send(page, "/words 60 /slow 40")
    lengths = []
    deadline = time.monotonic() + 20
    while reply_status(page) != "complete" and time.monotonic() < deadline:
        lengths.append(len(reply_text(page)))
        time.sleep(0.1)
    wait_for_status(page, "complete")
    assert reply_text(page) == words(60)
    growth = sorted(set(length for length in lengths if length))
    assert len(growth) >= 4, f"the reply should appear in several steps, saw lengths {lengths}"
    assert re.search(r"/c/\d+/$", page.url), "the new conversation's URL replaces the home URL"
    assert page.locator("#conversation-list .conversation-item").count() == 1
    assert page.inner_text(f"{'.msg-user'} .msg-body") == "/words 60 /slow 40"
    page.screenshot(path="/tmp/parley-chat.png")


def test_reload_mid_reply_finishes_with_the_whole_text(page):
    send(page, "/words 80 /slow 50")
    wait_for_words(page, 10)
    assert reply_status(page) == "streaming"
    page.reload()
    page.wait_for_selector(".msg-assistant")
    wait_for_status(page, "complete")
    text = reply_text(page)
    assert text == words(80), "every word exactly once, in order"


def test_stop_mid_reply(page):
    send(page, "/words 400 /slow 40")
    wait_for_words(page, 5)
    page.click("#stop-button")
    wait_for_status(page, "stopped")
    assert page.locator(".msg-assistant .status-stopped").inner_text() == "Stopped"
    stopped_at = reply_text(page)
    time.sleep(1)
    assert reply_text(page) == stopped_at, "no text arrives after Stop"
    assert 0 < len(stopped_at.split()) < 400
    assert page.is_visible("#send-button") and not page.is_visible("#stop-button")


def test_model_markup_is_inert_text(page):
    evil = '<script>window.__pwned=1</script> and <img src=x onerror="window.__pwned=2"> [x](javascript:window.__pwned=3)'
    send(page, evil)
    wait_for_status(page, "complete")
    page.wait_for_timeout(300)  # let any onerror that might fire, fire
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".msg-assistant .msg-body script, .msg-assistant .msg-body img").count() == 0
    assert page.locator(".msg-body a[href^='javascript']").count() == 0
    body = reply_text(page)
    assert "<script>window.__pwned=1</script>" in body
    assert '<img src=x onerror="window.__pwned=2">' in body
    # The user's own message is plain text, never HTML.
    assert page.inner_text(".msg-user .msg-body") == evil
    assert page.locator(".msg-user .msg-body *").count() == 0


def test_links_open_safely_and_code_has_copy(page):
    send(page, "see https://example.com please")
    wait_for_status(page, "complete")
    link = page.locator(".msg-assistant a[href='https://example.com']").first
    assert link.get_attribute("target") == "_blank"
    assert link.get_attribute("rel") == "noopener noreferrer"
    assert page.locator(".msg-assistant .code-block .hljs-keyword").count() > 0  # highlighted
    page.click(".msg-assistant .copy-code")
    page.wait_for_selector(".msg-assistant .copy-code:text('Copied')")


def test_second_tab_follows_the_same_reply(page, context):
    send(page, "/words 80 /slow 50")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    wait_for_words(page, 5)
    second = context.new_page()
    second.goto(page.url)
    second.wait_for_selector(".msg-assistant")
    lengths = []
    while reply_status(second) != "complete" and len(lengths) < 200:
        lengths.append(len(reply_text(second)))
        time.sleep(0.1)
    wait_for_status(second, "complete")
    assert len(set(lengths)) >= 3, "the second tab sees the reply grow live"
    assert reply_text(second) == words(80)
    wait_for_status(page, "complete")
    assert reply_text(page) == words(80)


def test_a_tab_already_open_follows_a_send_from_another_tab(page, context):
    send(page, "/words 3")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    wait_for_status(page, "complete")
    watcher = context.new_page()
    watcher.goto(page.url)
    watcher.wait_for_function("() => document.getElementById('connection').dataset.status === 'open'")
    send(page, "second message /words 60 /slow 40")
    watcher.wait_for_function("() => document.querySelectorAll('.msg-assistant').length === 2")
    lengths = []
    while reply_status(watcher) != "complete" and len(lengths) < 200:
        lengths.append(len(reply_text(watcher)))
        time.sleep(0.1)
    assert len(set(lengths)) >= 3, "the open tab sees the new reply grow live"
    assert reply_text(watcher) == words(60)
    assert "second message /words 60 /slow 40" in watcher.inner_text(".msg-user >> nth=-1")


def test_the_automatic_title_appears_without_a_reload(page):
    send(page, "Plan a weekend in Lisbon /words 3")
    wait_for_status(page, "complete")
    page.wait_for_function("() => document.title.startsWith('Plan a weekend in Lisbon')", timeout=20_000)
    page.wait_for_selector("#sidebar >> text=Plan a weekend in Lisbon", timeout=20_000)


def test_network_blip_loses_nothing(page):
    """The socket drops mid-reply; the page reconnects and resumes from its last cursor."""
    sockets = []

    def route(ws):
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/ws/chat/$"), route)
    page.reload()
    page.wait_for_function("() => document.getElementById('connection').dataset.status === 'open'")
    send(page, "/words 80 /slow 40")
    wait_for_words(page, 10)
    sockets[-1].close(code=4000, reason="blip")
    page.wait_for_function("() => document.getElementById('connection').dataset.status === 'reconnecting'", timeout=5000)
    wait_for_status(page, "complete")
    assert reply_text(page) == words(80)
    assert len(sockets) >= 2, "the page opened a new socket"


def test_long_message_is_refused_before_sending(page):
    limit = int(page.get_attribute("#chat", "data-max-chars"))
    page.fill("#composer-input", "x" * (limit + 1))
    page.press("#composer-input", "Enter")
    assert "the limit is" in page.inner_text("#composer-error")
    assert page.locator(".msg-user").count() == 0
    page.fill("#composer-input", "   ")
    page.press("#composer-input", "Enter")
    assert page.locator(".msg-user").count() == 0


def test_sidebar_rename_filter_delete(page):
    send(page, "/words 3")
    wait_for_status(page, "complete")
    item = page.locator("#conversation-list .conversation-item").first
    item.hover()
    item.locator("button[title=Rename]").click()
    page.fill(".rename-form input[name=title]", "Holiday ideas")
    page.click(".rename-form button[type=submit]")
    page.wait_for_selector("#conversation-list .conversation-link:text('Holiday ideas')")
    assert page.inner_text("#chat-title") == "Holiday ideas"

    page.fill("#sidebar-q", "zzz")
    page.wait_for_selector("#conversation-list .empty")
    page.fill("#sidebar-q", "holi")
    page.wait_for_selector("#conversation-list .conversation-link:text('Holiday ideas')")

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#conversation-list .conversation-item").first.locator("button[title=Delete]").click()
    page.wait_for_url(re.compile(r"/$"))
    page.wait_for_selector("#welcome")
    assert page.locator("#conversation-list .conversation-item").count() == 0


def test_phone_width(context, user):
    phone = context.new_page()
    phone.set_viewport_size({"width": 375, "height": 740})
    log_in(phone, user.username)
    send(phone, "Hello from a phone, with a long enough message to wrap over several lines on a small screen.")
    wait_for_status(phone, "complete")
    assert phone.is_visible("#sidebar-toggle")
    box = phone.locator("#composer-input").bounding_box()
    assert box and box["y"] + box["height"] <= 740 and box["width"] > 250
    assert phone.is_visible("#send-button")
    sidebar = phone.locator("#sidebar").bounding_box()
    assert sidebar is None or sidebar["x"] + sidebar["width"] <= 0, "the sidebar hides behind its toggle"
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, "nothing overflows sideways"
    phone.screenshot(path="/tmp/parley-phone.png")
    phone.click("#sidebar-toggle")
    phone.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().x >= 0")
    phone.screenshot(path="/tmp/parley-phone-sidebar.png")


def test_stored_endings_are_explained(page, user):
    """Replies that ended earlier show why: stopped, interrupted, failed, with notices."""
    from chat.models import ChatModel, Conversation, Message

    conversation = Conversation.objects.create(owner=user, model=ChatModel.objects.get(name="parley-demo"), title="Old")
    for status, extra in [
        ("stopped", {}),
        ("interrupted", {"notice": "Older turns were left out to fit the model."}),
        ("failed", {"error_code": "overloaded", "error_text": "The model provider is overloaded right now."}),
    ]:
        Message.objects.create(conversation=conversation, role="user", content=f"question {status}")
        Message.objects.create(conversation=conversation, role="assistant", content=f"partial **{status}**", status=status, **extra)
    page.goto(f"/c/{conversation.pk}/")
    page.wait_for_selector(".msg-assistant[data-status=failed]")
    assert page.inner_text(".msg-assistant[data-status=stopped] .msg-foot") == "Stopped"
    assert page.inner_text(".msg-assistant[data-status=interrupted] .msg-foot") == (
        "Interrupted: the server stopped while writing this reply; the text so far is kept."
    )
    assert "Older turns were left out" in page.inner_text(".msg-assistant[data-status=interrupted] .msg-notice")
    assert "overloaded" in page.inner_text(".msg-assistant[data-status=failed] .msg-error")
    assert page.locator(".msg-assistant[data-status=stopped] strong").inner_text() == "stopped"
    assert page.is_visible("#send-button") and not page.is_visible("#stop-button")
