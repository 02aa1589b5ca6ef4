"""The pages under their Content-Security-Policy in Chromium: the chat streams over its WebSocket and
the admin's pages, the usage charts included, work with nothing blocked. The `context` fixture fails a
test on any violation; the first test shows that it would see one."""

import pytest

from tests.browser.conftest import PASSWORD, log_in, watch_policies

pytestmark = [pytest.mark.browser, pytest.mark.live]

LAST_REPLY = "[...document.querySelectorAll('.msg-assistant')].at(-1)"
ADMIN_PAGES = ["/admin/", "/admin/usage/", "/admin/billing/usagerecord/", "/admin/accounts/user/", "/admin/accounts/plan/add/"]


def assert_enforced(response) -> None:
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_the_watch_sees_what_the_policy_blocks(browser, live_app, user):
    context = browser.new_context(base_url=live_app.url)
    violations = watch_policies(context)
    page = context.new_page()
    log_in(page, user.username)
    page.evaluate("""() => {
        const script = document.createElement("script");
        script.textContent = "window.injected = true";
        document.body.append(script);
    }""")
    page.wait_for_function("() => document.readyState === 'complete'")
    page.wait_for_timeout(200)
    assert page.evaluate("window.injected") is None
    context.close()
    assert any("script-src" in text for text in violations), violations


def test_a_reply_streams_in_under_the_policy(context, user):
    page = context.new_page()
    log_in(page, user.username)
    assert_enforced(page.reload())
    page.fill("#composer-input", "/words 20")
    page.press("#composer-input", "Enter")
    page.wait_for_function(f"() => {LAST_REPLY}?.dataset.status === 'complete'")
    text = page.evaluate(f"{LAST_REPLY}.querySelector('.msg-body').innerText").strip()
    assert text == " ".join(f"word{n}" for n in range(1, 21))
    page.reload()  # the stored conversation, rendered with markdown and highlighting
    page.wait_for_selector(".msg-assistant")


def test_the_admin_pages_work_under_the_policy(context, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    page = context.new_page()
    page.goto("/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#reports-module")
    for path in ADMIN_PAGES:
        response = page.goto(path)
        assert response.status == 200, path
        assert_enforced(response)
        page.wait_for_load_state("load")
        if path == "/admin/usage/":
            assert page.locator("svg.bar-chart").count() >= 2
            # The page's own stylesheet applies (it was an inline <style> the policy would block).
            margin = page.evaluate("getComputedStyle(document.querySelector('.usage-picker')).marginBottom")
            assert margin not in {"", "0px"}, margin
