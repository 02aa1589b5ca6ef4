"""Sharing, searching and the system prompt in a real browser: a shared snapshot read by a visitor
with its markup inert, revoked from the dialog; marked search results; a preset's prompt reaching
the model's upstream."""

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from chat.models import ChatModel, Conversation, Message
from chat.presets import create_preset
from tests.browser.conftest import log_in, watch_policies
from tests.fakes import Scenario
from tests.fakes.openai_server import OpenAIFake

pytestmark = [pytest.mark.browser, pytest.mark.live]

EVIL_TITLE = '<img src=x onerror="window.__pwned=1"> title'
EVIL = '<script>window.__pwned=2</script> and <img src=x onerror="window.__pwned=3"> [x](javascript:window.__pwned=4)'


def demo_conversation(user, title: str) -> Conversation:
    return Conversation.objects.create(owner=user, title=title, title_is_auto=False, model=ChatModel.objects.get(name="parley-demo"))


def test_a_visitor_reads_the_snapshot_with_its_markup_inert_until_it_is_revoked(page, browser, live_app, user):
    conversation = demo_conversation(user, EVIL_TITLE)
    Message.objects.create(conversation=conversation, role="user", content=EVIL)
    Message.objects.create(conversation=conversation, role="assistant", content=f"**bold** {EVIL}", model="parley-demo")
    page.goto(f"/c/{conversation.pk}/")
    page.click("#conversation-menu summary")
    page.click("#share-button")
    page.click("#share-create")
    url = page.input_value(".share-item input")
    assert url.startswith(live_app.url + "/s/")

    visitor_context = browser.new_context()  # signed out, cookies of its own
    violations = watch_policies(visitor_context)
    visitor = visitor_context.new_page()
    errors: list[str] = []
    visitor.on("pageerror", lambda error: errors.append(str(error)))
    response = visitor.goto(url)
    assert response.status == 200 and response.headers["referrer-policy"] == "no-referrer"
    visitor.wait_for_selector(".shared-messages .msg-assistant .markdown:not(.pending)")
    visitor.wait_for_timeout(300)  # let any onerror that might fire, fire
    assert visitor.evaluate("window.__pwned") is None
    assert visitor.locator("img, [onerror], .shared-messages script, a[href^='javascript']").count() == 0
    assert visitor.inner_text(".msg-assistant strong") == "bold"  # replies are drawn as Markdown
    assert '<img src=x onerror="window.__pwned=3">' in visitor.inner_text(".msg-assistant .msg-body")
    assert visitor.inner_text(".msg-user .msg-body") == EVIL and visitor.locator(".msg-user .msg-body *").count() == 0
    assert visitor.inner_text("h1") == EVIL_TITLE
    assert user.username not in visitor.content()
    assert visitor.locator("main").count() == 1 and visitor.get_attribute("html", "lang") == "en"
    visitor.screenshot(path="/tmp/parley-shared.png")
    page.screenshot(path="/tmp/parley-share-dialog.png")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click(".share-revoke")
    page.wait_for_selector(".share-item", state="detached")
    assert page.is_visible("#share-empty")
    assert visitor.goto(url).status == 404
    visitor_context.close()
    assert not errors and not violations


def test_the_sidebar_search_finds_message_text_and_marks_it(page, user):
    conversation = demo_conversation(user, "Holiday")
    Message.objects.create(conversation=conversation, role="user", content="Which <b>penguins</b> live in Chile?")
    demo_conversation(user, "Taxes")
    page.reload()
    page.fill("#sidebar-q", "penguin")
    page.wait_for_selector("#conversation-list .search-snippet mark")
    assert page.locator("#conversation-list .conversation-item").count() == 1
    assert page.inner_text("#conversation-list .search-snippet") == "Which <b>penguins</b> live in Chile?"
    assert page.inner_text("#conversation-list .search-snippet mark") == "penguin"
    assert page.locator("#conversation-list .search-snippet b").count() == 0


@contextmanager
def fake_upstream() -> Iterator[OpenAIFake]:
    """The fake OpenAI server on an event loop of its own, beside Playwright's."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = OpenAIFake(Scenario(tokens=6))
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_system_prompt_chosen_on_a_new_chat_reaches_the_upstream(browser, live_factory, user):
    create_preset("Pirate", "Talk like a pirate.")
    create_preset("Hidden", "Never offered.", enabled=False)
    with fake_upstream() as fake:
        ChatModel.objects.create(name="fake-gpt", label="Fake GPT", provider="openai", base_url=fake.base_url)
        server = live_factory(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.base_url, PROVIDER_MAX_RETRIES="0").start_daphne()
        context = browser.new_context(base_url=server.url)
        context.set_default_timeout(15_000)
        violations = watch_policies(context)
        page = context.new_page()
        log_in(page, user.username)
        page.select_option("#model-picker", "fake-gpt")
        page.click("#system-prompt-button")
        assert page.locator("#system-prompt-preset option").all_inner_texts() == ["None", "Pirate"]
        page.select_option("#system-prompt-preset", label="Pirate")
        assert page.input_value("#system-prompt-text") == "Talk like a pirate."
        assert page.inner_text("#system-prompt-follows").startswith("Follows “Pirate” (version 1)")
        page.fill("#system-prompt-text", "Talk like a pirate. Keep it short.")
        assert page.inner_text("#system-prompt-follows").startswith("Edited: this conversation keeps your text")
        page.click("#system-prompt-save")
        page.wait_for_url("**/c/*/")
        assert page.is_visible("#system-prompt-tag") and not page.is_visible("#system-prompt-dialog")
        conversation = Conversation.objects.get(owner=user)
        assert conversation.system_prompt == "Talk like a pirate. Keep it short." and conversation.preset.name == "Pirate"
        assert conversation.preset_version is None  # edited: its own text, whatever the preset becomes

        page.fill("#composer-input", "Ahoy?")
        page.press("#composer-input", "Enter")
        page.wait_for_function("() => document.querySelector('.msg-assistant')?.dataset.status === 'complete'")
        sent = [request.json for request in fake.requests if request.json.get("stream")][-1]["messages"]
        assert sent[0] == {"role": "system", "content": "Talk like a pirate. Keep it short."}
        assert sent[-1] == {"role": "user", "content": "Ahoy?"}

        page.reload()  # the saved prompt and its preset come back with the page
        page.click("#system-prompt-button")
        assert page.input_value("#system-prompt-text") == "Talk like a pirate. Keep it short."
        assert page.input_value("#system-prompt-preset") == str(conversation.preset_id)
        page.click("#system-prompt-cancel")
        page.click("#conversation-menu summary")
        assert page.get_attribute("#export-md", "href") == f"/api/conversations/{conversation.pk}/export?format=md"
        context.close()
        assert not violations
