"""The offline demo model: deterministic, useful, and controllable from the message."""

import re
import time

import pytest

from providers import get_provider
from providers.base import (
    Capabilities,
    ChatRequest,
    ErrorCode,
    Finish,
    StreamError,
    TextDelta,
    Timeouts,
    Usage,
    collect,
    estimate_tokens,
)
from providers.demo import DemoProvider

INSTANT = DemoProvider(Timeouts(connect=5, first_token=5, idle=5), tokens_per_second=0)


def ask(content: str, **overrides) -> ChatRequest:
    fields = {"model": "parley-demo", "messages": [{"role": "user", "content": content}]} | overrides
    return ChatRequest(**fields)


async def test_reply_is_deterministic():
    first = await collect(INSTANT, ask("Tell me about streaming"))
    second = await collect(INSTANT, ask("Tell me about streaming"))
    assert first.deltas == second.deltas
    assert first.text != (await collect(INSTANT, ask("Something else"))).text


async def test_reply_has_markdown_heading_list_bold_and_python_block():
    reply = await collect(INSTANT, ask("hello"))
    text = reply.text
    assert re.search(r"^#{1,3} \S", text, re.MULTILINE)
    assert re.search(r"^- \S", text, re.MULTILINE)
    assert re.search(r"\*\*[^*]+\*\*", text)
    assert re.search(r"^```python\n.+\n```$", text, re.MULTILINE | re.DOTALL)
    assert text.count("```") == 2
    assert "demo model" in text
    for setting in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL"):
        assert setting in text


@pytest.mark.parametrize(
    "payload",
    ["<script>alert('x')</script>", '<img src=x onerror="alert(1)">', "a & b < c > d \"q\" 'r' `s` **t**"],
)
async def test_quotes_the_message_verbatim(payload):
    reply = await collect(INSTANT, ask(payload))
    assert f"> You said: {payload}\n" in reply.text


async def test_multi_line_messages_stay_inside_the_quote():
    reply = await collect(INSTANT, ask("line one\nline two"))
    assert reply.text.startswith("> You said: line one\n> line two\n")


async def test_quotes_the_last_user_message():
    history = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "second question"},
    ]
    reply = await collect(INSTANT, ask("", messages=history))
    assert "> You said: second question\n" in reply.text
    assert "3 messages" in reply.text


async def test_streams_word_by_word_and_reports_usage_and_finish():
    request = ask("count my words please", system="Be kind.")
    events = [event async for event in INSTANT.stream(request)]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 50
    assert all(len(d.text.split()) == 1 for d in deltas)
    assert events[-2] == Usage(prompt_tokens=estimate_tokens("Be kind.count my words please"),
                               completion_tokens=len(deltas))
    assert events[-1] == Finish("stop", model_version="parley-demo-1")


@pytest.mark.parametrize("count", [1, 7, 250])
async def test_words_control_gives_exactly_n_words(count):
    reply = await collect(INSTANT, ask(f"benchmark /words {count}"))
    assert reply.text == " ".join(f"word{n}" for n in range(1, count + 1))
    assert len(reply.deltas) == count
    assert reply.usage.completion_tokens == count
    assert reply.finish.reason == "stop"


async def test_words_control_is_capped():
    reply = await collect(INSTANT, ask("/words 99999", max_output_tokens=10**6))
    assert len(reply.text.split()) == 5000


async def test_fail_control_ends_with_that_error_after_a_couple_of_words():
    events = [event async for event in INSTANT.stream(ask("/words 20 /fail rate_limited"))]
    assert events[:2] == [TextDelta("word1"), TextDelta(" word2")]
    assert isinstance(events[2], StreamError)
    assert events[2].code == ErrorCode.RATE_LIMITED
    assert events[2].retry_after is not None
    assert len(events) == 3


@pytest.mark.parametrize("code", [c.value for c in ErrorCode])
async def test_fail_control_accepts_every_code(code):
    reply = await collect(INSTANT, ask(f"please /fail {code}"))
    assert reply.error.code == ErrorCode(code)
    assert reply.text  # a couple of words came first
    assert reply.finish is None


async def test_fail_control_with_an_unknown_code_still_fails():
    reply = await collect(INSTANT, ask("/fail nonsense"))
    assert reply.error.code == ErrorCode.PROVIDER_UNAVAILABLE


async def test_slow_control_paces_each_word():
    started = time.monotonic()
    reply = await collect(INSTANT, ask("/words 5 /slow 60"))
    elapsed = time.monotonic() - started
    assert reply.text == "word1 word2 word3 word4 word5"
    assert 0.28 <= elapsed < 2.0


async def test_configured_rate_paces_the_reply():
    paced = DemoProvider(Timeouts(5, 5, 5), tokens_per_second=100)
    started = time.monotonic()
    await collect(paced, ask("/words 20"))
    assert 0.18 <= time.monotonic() - started < 2.0


async def test_setting_drives_the_default_rate(settings):
    settings.PARLEY_DEMO_TOKENS_PER_SECOND = 0
    started = time.monotonic()
    reply = await collect(DemoProvider(), ask("/words 2000", max_output_tokens=10**6))
    assert len(reply.deltas) == 2000
    assert time.monotonic() - started < 5.0  # paced at the default 40 a second it would take 50 s


def test_registry_offers_it_without_a_key():
    provider = get_provider("demo")
    assert isinstance(provider, DemoProvider)
    assert provider.capabilities.needs_key is False
    assert provider.name == "demo"


def test_titles_of_demo_conversations_leave_out_the_control_syntax(db, alice):
    from chat.models import ChatModel, Conversation, Message
    from chat.titles import generate_title

    conversation = Conversation.objects.create(owner=alice, model=ChatModel.objects.get(name="parley-demo"))
    Message.objects.create(conversation=conversation, role="user", content="Plan a weekend /words 40 /slow 10 in Lisbon /fail x")
    Message.objects.create(conversation=conversation, role="assistant", content="Sure.")
    assert generate_title(conversation.pk) == "Plan a weekend in Lisbon"


class DemoWithoutSystemPrompts(DemoProvider):
    capabilities = Capabilities(system_prompt=False, needs_key=False)


async def test_a_model_without_system_prompts_gets_it_in_the_first_user_turn():
    reply = await collect(DemoWithoutSystemPrompts(tokens_per_second=0), ask("Hello there", system="Answer in French."))
    assert "You said: Answer in French.\n> \n> Hello there" in reply.text
    assert "plus a system prompt" not in reply.text  # the model saw none
    plain = await collect(INSTANT, ask("Hello there", system="Answer in French."))
    assert "You said: Hello there" in plain.text and "plus a system prompt" in plain.text
