"""axe-core (from the npm registry, installed by the test setup) finds no serious or critical
violation on the pages people use: sign-in, the chat while a reply streams and after, the sidebar
on a phone, a shared conversation and the admin usage page."""

import json
from pathlib import Path

import pytest

from tests.browser.conftest import PASSWORD, log_in
from tests.browser.test_chat_browser import send, wait_for_status, wait_for_words

pytestmark = [pytest.mark.browser, pytest.mark.live]

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")


def axe_source() -> str:
    # No skip: a missing axe-core is a broken setup (bin/parley test installs it with npm ci).
    assert AXE.is_file(), f"{AXE} is missing: run `bin/parley setup` (it runs npm ci)"
    return AXE.read_text()


def serious_violations(page) -> list[str]:
    """axe's serious and critical findings on the page as it is now, one line each."""
    if not page.evaluate("() => Boolean(window.axe)"):
        page.evaluate(axe_source())  # evaluated by the browser's debugger: no inline script for the CSP to refuse
    found = page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.slice(0, 3).map((n) => n.target.join(" ")), summary: v.nodes[0]?.failureSummary}));
        }"""
    )
    return [json.dumps(v) for v in found if v["impact"] in SERIOUS]


def test_the_sign_in_page(context):
    page = context.new_page()
    page.goto("/accounts/login/")
    assert serious_violations(page) == []
    # The checker is awake: a button without a name, added here, is a critical finding.
    page.evaluate("() => document.querySelector('main, body').append(document.createElement('button'))")
    assert any('"button-name"' in line for line in serious_violations(page))


def test_the_chat_page_while_a_reply_streams_and_after(page):
    send(page, "Hello **there** with `code` and a [link](https://example.com) /words 400 /slow 30")
    wait_for_words(page, 5)
    assert serious_violations(page) == []
    page.click("#stop-button")
    wait_for_status(page, "stopped")
    send(page, "A short one /words 5")
    wait_for_status(page, "complete")
    assert serious_violations(page) == []


def test_the_sidebar_open_on_a_phone(context, user):
    phone = context.new_page()
    phone.set_viewport_size({"width": 375, "height": 740})
    log_in(phone, user.username)
    send(phone, "From a phone /words 5")
    wait_for_status(phone, "complete")
    phone.click("#sidebar-toggle")
    phone.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().x >= 0")
    assert serious_violations(phone) == []


def test_a_shared_conversation(page, context, user):
    from chat.models import Conversation
    from sharing.actions import create_link

    send(page, "Share this **answer** /words 20")
    wait_for_status(page, "complete")
    conversation = Conversation.objects.get(owner=user)
    link = create_link(user, conversation.pk)
    visitor = context.browser.new_context(base_url=page.url.split("/c/")[0])
    shared = visitor.new_page()
    shared.goto(link.path())
    shared.wait_for_selector("main")
    assert serious_violations(shared) == []
    visitor.close()


def test_the_admin_usage_page(context, django_user_model):
    django_user_model.objects.create_superuser("auditor", password=PASSWORD)
    page = context.new_page()
    page.goto("/admin/login/")
    page.fill("#id_username", "auditor")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_selector("#site-name")
    page.goto("/admin/usage/")
    page.wait_for_selector("#content")
    assert serious_violations(page) == []


def test_a_reply_is_announced_once_when_it_ends_not_token_by_token(page):
    assert page.get_attribute("#messages", "aria-live") in (None, "off")
    send(page, "Announce me /words 40 /slow 30")
    wait_for_words(page, 3)
    page.wait_for_function("() => document.getElementById('announcer').textContent === 'Writing a reply…'")
    changes = page.evaluate(
        """() => new Promise((resolve) => {
            const seen = [];
            new MutationObserver(() => seen.push(document.getElementById('announcer').textContent))
                .observe(document.getElementById('announcer'), {childList: true, characterData: true, subtree: true});
            const done = () => document.querySelector('.msg-assistant').dataset.status === 'complete';
            const wait = () => done() ? setTimeout(() => resolve(seen), 400) : setTimeout(wait, 50);
            wait();
        })"""
    )
    spoken = [text for text in changes if text]
    assert spoken == ["Reply: " + " ".join(f"word{n}" for n in range(1, 41))]
    assert page.evaluate("() => document.activeElement.id") == "composer-input"  # focus stays where the user types
