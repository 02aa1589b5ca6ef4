"""Playwright driving Debian's Chromium against the live app (real daphne + Celery, see tests/live.py)."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser-pass-123456"
# What Chromium logs when the Content-Security-Policy blocks something, or cannot read the Permissions-Policy.
POLICY_MESSAGES = ("Content Security Policy", "Permissions-Policy")
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => window.parleyPolicyViolation(
  `${event.effectiveDirective} blocked ${event.blockedURI || "inline code"} in ${event.sourceFile || event.documentURI}:${event.lineNumber}`));
"""


def _unavailable(reason: str) -> None:
    # CI sets PARLEY_REQUIRE_BROWSER so that a missing browser fails loudly instead of skipping.
    if os.environ.get("PARLEY_REQUIRE_BROWSER"):
        pytest.fail(f"Browser tests are required but cannot run: {reason}")
    pytest.skip(f"Browser tests skipped: {reason}")


@pytest.fixture(scope="module")
def browser(live_app) -> Iterator["object"]:
    """One Chromium per test module; module scope so its event loop is gone before other tests run."""
    if not Path(CHROMIUM).exists():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PARLEY_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    # Playwright's sync API keeps an asyncio loop in this thread; Django's ORM (fixtures creating
    # users, flushing tables) would refuse to run beside it although nothing here is concurrent.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def context(browser, live_app):
    """A browser profile; anything the pages' policies block in it fails the test. The CSP forbids
    eval, so `wait_for_function` takes a function (`"() => ..."`), not a bare expression."""
    context = browser.new_context(base_url=live_app.url, viewport={"width": 1200, "height": 820})
    context.set_default_timeout(15_000)
    violations = watch_policies(context)
    yield context
    context.close()
    assert not violations, f"Blocked by the page's policies: {violations}"


def watch_policies(context) -> list[str]:
    """Collects, from every page of the context, Chromium's console reports of the policies and the
    securitypolicyviolation events (the init script is the browser's, so the CSP does not apply to it)."""
    found: list[str] = []
    context.on("console", lambda message: found.extend([message.text] if any(text in message.text for text in POLICY_MESSAGES) else []))
    context.expose_binding("parleyPolicyViolation", lambda source, text: found.append(text))
    context.add_init_script(REPORT_VIOLATIONS)
    return found


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("walter", password=PASSWORD)


@pytest.fixture
def page(context, user):
    """A signed-in tab on the empty chat page; page errors fail the test."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, user.username)
    yield page
    assert not errors, f"JavaScript errors: {errors}"


def log_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("form button[type=submit]")
    page.wait_for_url("**/")
    page.wait_for_selector("#composer-input")


@pytest.fixture(autouse=True)
def _catalogue(transactional_db) -> None:
    """Every browser test uses the live database; put back the model catalogue a flush removed.

    Overrides tests/conftest.py's fixture of the same name, which runs before the database fixture
    is set up when a test names `transactional_db` only as an argument.
    """
    from chat.catalogue import seed
    from chat.models import ChatModel
    from routing.models import seed_auto

    seed(ChatModel)
    seed_auto(ChatModel)
