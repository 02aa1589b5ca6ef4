"""The history sent to a model fits its context window; the oldest turns go first, the user is told."""

import pytest

from chat.history import DoesNotFit, fit_history, message_tokens
from providers.base import TextFile
from chat.models import ChatModel, Conversation, Message
from chat.replies import send_message


def test_everything_fits_in_a_large_window():
    fitted = fit_history([("user", "hi"), ("assistant", "hello"), ("user", "how are you")], "Be brief.", 8000, 1000)
    assert [m["content"] for m in fitted.messages] == ["hi", "hello", "how are you"]
    assert fitted.dropped == 0 and fitted.notice == ""


def test_oldest_turns_are_dropped_and_the_conversation_still_opens_with_the_user():
    turns = [("user", "a" * 400), ("assistant", "b" * 400), ("user", "c" * 400), ("assistant", "d" * 400), ("user", "e" * 40)]
    fitted = fit_history(turns, "s" * 40, context_window=460, max_output_tokens=100)
    assert [m["content"][0] for m in fitted.messages] == ["c", "d", "e"]
    assert fitted.messages[0]["role"] == "user"
    assert fitted.dropped == 2
    assert "2 earlier messages were left out" in fitted.notice


def test_the_prompt_estimate_counts_the_system_prompt_and_each_kept_message_with_its_framing():
    from chat.history import MESSAGE_OVERHEAD_TOKENS as FRAMING

    fitted = fit_history([("user", "a" * 400), ("assistant", "b" * 40), ("user", "c" * 4)], "s" * 8, 8000, 100)
    assert fitted.prompt_estimate == (2 + FRAMING) + (100 + FRAMING) + (10 + FRAMING) + (1 + FRAMING)
    trimmed = fit_history([("user", "a" * 400), ("assistant", "b" * 400), ("user", "c" * 40)], "", 230, 100)
    assert [m["content"][0] for m in trimmed.messages] == ["c"]  # "b" fitted, then went: a reply cannot open
    assert trimmed.prompt_estimate == 10 + FRAMING


def test_a_system_prompt_takes_its_share_of_the_window():
    turns = [("user", "a" * 400), ("assistant", "b" * 400), ("user", "c" * 40)]
    roomy = fit_history(turns, "", 400, 100)
    tight = fit_history(turns, "s" * 800, 400, 100)
    assert len(tight.messages) < len(roomy.messages)


def test_a_newest_message_that_cannot_fit_is_refused():
    with pytest.raises(DoesNotFit):
        fit_history([("user", "x" * 10_000)], "", 1000, 100)


def test_two_user_turns_in_a_row_are_merged():
    fitted = fit_history([("user", "first"), ("assistant", ""), ("user", "second")], "", 8000, 100)
    assert fitted.messages == [{"role": "user", "content": "first\n\nsecond"}]


@pytest.mark.django_db(transaction=True)
async def test_a_long_conversation_is_trimmed_and_the_reply_carries_the_notice(alice):
    model = await ChatModel.objects.aget(name="parley-demo")
    model.context_window = 1200
    model.max_output_tokens = 200
    await model.asave()
    conversation = await Conversation.objects.acreate(owner=alice, model=model)
    for index in range(6):
        await Message.objects.acreate(conversation=conversation, role="user", content=f"question {index} " + "q" * 800)
        await Message.objects.acreate(conversation=conversation, role="assistant", content="answer " + "a" * 800, status="complete")
    event = await send_message(alice, conversation.pk, "and now? /words 2")
    notice = event["assistant_message"]["notice"]
    assert notice and "left out" in notice
    from chat.replies import attach

    async for _batch in attach(alice, event["assistant_message"]["id"], ""):
        pass
    stored = await Message.objects.aget(pk=event["assistant_message"]["id"])
    assert stored.notice == notice and stored.status == "complete"


@pytest.mark.django_db(transaction=True)
async def test_a_message_too_long_for_the_window_is_refused_before_anything_is_stored(alice):
    from chat.actions import ActionError

    model = await ChatModel.objects.aget(name="parley-demo")
    model.context_window = 500
    await model.asave()
    with pytest.raises(ActionError) as refused:
        await send_message(alice, None, "x" * 5000)
    assert refused.value.code == "context_too_long"
    assert await Message.objects.acount() == 0


def test_a_turns_files_count_toward_the_window_and_go_with_it():
    notes = TextFile("notes.txt", "n" * 400)
    turns = [("user", "old question"), ("assistant", "old answer"), ("user", "about the file", (notes,))]
    kept = fit_history(turns, "", 8000, 100)
    assert kept.messages[-1] == {"role": "user", "content": "about the file", "attachments": (notes,)}
    assert kept.prompt_estimate == sum(message_tokens(c) for _, c, *_ in turns[:2]) + message_tokens("about the file", (notes,))
    tight = fit_history(turns, "", message_tokens("about the file", (notes,)) + 100, 100)
    assert tight.dropped == 2 and len(tight.messages) == 1
    with pytest.raises(DoesNotFit) as too_long:
        fit_history(turns, "", 200, 100)
    assert (too_long.value.needs, too_long.value.room) == (message_tokens("about the file", (notes,)), 100)
