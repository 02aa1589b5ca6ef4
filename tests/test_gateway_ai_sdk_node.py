"""The AI SDK door through the `ai` npm package's own transport, reader and AbstractChat, run by
Node.js against real daphne processes: a send read to its final UIMessage, a regenerate, and a
reply resumed from a second web process after the page dropped its connection."""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from accounts.models import ApiToken
from chat.models import Conversation, Message, Source

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

NODE_DIR = Path(__file__).resolve().parent / "node"


def node(script: str, **args: Any) -> dict[str, Any]:
    binary = shutil.which("node")
    assert binary is not None, "Node.js is required for the AI SDK tests (the `ai` npm package runs in it)"
    done = subprocess.run(
        [binary, str(NODE_DIR / script), json.dumps(args)], capture_output=True, text=True, timeout=120,
        cwd=NODE_DIR.parent.parent,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def text_of(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


@pytest.fixture
def token(alice) -> str:
    return ApiToken.issue(alice, "ai sdk", scopes=[ApiToken.Scope.GATEWAY])[1]


def test_the_transport_reads_a_reply_to_the_stored_text(live_app, alice, token):
    out = node("ai_sdk_transport.mjs", mode="send", url=live_app.url, token=token, chatId="chat-one", text="hello /words 40")
    reply = Message.objects.get(pk=int(out["message"]["id"]))
    assert reply.status == Message.Status.COMPLETE
    assert text_of(out["message"]) == reply.content
    assert reply.content == " ".join(f"word{n}" for n in range(1, 41))
    assert out["chunks"][:3] == ["start", "start-step", "text-start"]
    assert out["chunks"][-3:] == ["text-end", "finish-step", "finish"]
    conversation = reply.conversation
    assert (conversation.owner, conversation.source, conversation.external_id) == (alice, Source.AI_SDK, "chat-one")


def test_a_known_chat_id_continues_its_conversation(live_app, alice, token):
    first = node("ai_sdk_transport.mjs", mode="send", url=live_app.url, token=token, chatId="again", text="one /words 3")
    second = node("ai_sdk_transport.mjs", mode="send", url=live_app.url, token=token, chatId="again", text="two /words 5")
    assert text_of(second["message"]) == "word1 word2 word3 word4 word5"
    conversation = Conversation.objects.get(owner=alice, source=Source.AI_SDK, external_id="again")
    rows = list(conversation.messages.order_by("pk").values_list("role", "content"))
    assert rows == [
        ("user", "one /words 3"), ("assistant", "word1 word2 word3"),
        ("user", "two /words 5"), ("assistant", "word1 word2 word3 word4 word5"),
    ]
    assert {int(first["message"]["id"]), int(second["message"]["id"])} == {pk for pk, in conversation.messages.filter(role="assistant").values_list("pk")}


def test_abstract_chat_sends_and_regenerates(live_app, alice, token):
    out = node("ai_sdk_chat.mjs", url=live_app.url, token=token, chatId="abstract", text="hi /words 7", regenerate=True)
    assert out["status"] == "ready" and out["error"] is None
    user, assistant = out["messages"]
    assert user["role"] == "user" and text_of(user) == "hi /words 7"
    assert assistant["role"] == "assistant" and text_of(assistant) == "word1 word2 word3 word4 word5 word6 word7"
    conversation = Conversation.objects.get(owner=alice, external_id="abstract")
    replies = list(conversation.messages.filter(role="assistant").order_by("pk"))
    assert len(replies) == 2  # the regenerate is a second version of the reply, beside the first
    assert replies[1].parent_id == replies[0].parent_id
    assert int(assistant["id"]) == replies[1].pk == conversation.current_leaf_id
    assert out["finished"] == [str(replies[0].pk), str(replies[1].pk)]


def test_a_dropped_reply_resumes_whole_from_another_web_process(live_factory, alice, token):
    app = live_factory()
    first, second = app.start_daphne(), app.start_daphne()
    words = 400
    out = node(
        "ai_sdk_transport.mjs", mode="drop-and-resume", url=first.url, resumeUrl=second.url, token=token,
        chatId="dropped", text=f"long /words {words} /slow 15", words=10,
    )
    expected = " ".join(f"word{n}" for n in range(1, words + 1))
    assert len(out["before"].split()) >= 10 and expected.startswith(out["before"])
    assert text_of(out["message"]) == expected  # from the start, nothing lost or repeated
    assert out["chunks"].count("start") == 1 and out["chunks"].count("text-start") == 1
    assert out["chunks"][-1] == "finish"
    reply = Message.objects.get(pk=int(out["message"]["id"]))
    assert (reply.status, reply.content) == (Message.Status.COMPLETE, expected)  # the drop did not stop it


def test_resume_with_nothing_running_is_null(live_app, alice, token):
    node("ai_sdk_transport.mjs", mode="send", url=live_app.url, token=token, chatId="idle", text="done /words 2")
    assert node("ai_sdk_transport.mjs", mode="resume", url=live_app.url, token=token, chatId="idle") == {"message": None}
    assert node("ai_sdk_transport.mjs", mode="resume", url=live_app.url, token=token, chatId="unknown") == {"message": None}


def test_a_failed_reply_reaches_the_reader_as_an_error_chunk(live_app, alice, token):
    out = node("ai_sdk_transport.mjs", mode="send", url=live_app.url, token=token, chatId="failing", text="x /fail timeout")
    assert "error" in out["chunks"] and out["chunks"][-1] == "finish"
    reply = Message.objects.get(conversation__external_id="failing", role="assistant")
    assert reply.status == Message.Status.FAILED
    assert text_of(out["message"]) == reply.content


def test_a_reloaded_chat_resumes_the_reply_its_page_left(live_factory, alice, token):
    app = live_factory()
    first, second = app.start_daphne(), app.start_daphne()
    words = 300
    out = node(
        "ai_sdk_chat.mjs", url=first.url, resumeUrl=second.url, token=token, chatId="reloaded",
        text=f"long /words {words} /slow 15", reloadAfterWords=10,
    )
    expected = " ".join(f"word{n}" for n in range(1, words + 1))
    assert len(out["before"].split()) >= 10 and len(out["before"]) < len(expected)
    assert out["status"] == "ready" and out["error"] is None
    [assistant] = out["messages"]  # a reloaded page knows only what it resumed
    assert assistant["role"] == "assistant" and text_of(assistant) == expected
    assert out["finished"] == [assistant["id"]]
    assert Message.objects.get(pk=int(assistant["id"])).content == expected


def test_a_stopped_reply_ends_the_stream_with_an_abort(live_app, alice, token):
    stopper = ApiToken.issue(alice, "stop", scopes=[ApiToken.Scope.CHAT])[1]
    out = node(
        "ai_sdk_transport.mjs", mode="stop", url=live_app.url, token=token, stopToken=stopper, chatId="stop",
        text="long /words 300 /slow 15", words=5,
    )
    assert out["chunks"][-3:] == ["text-end", "finish-step", "abort"]
    reply = Message.objects.get(pk=int(out["message"]["id"]))
    assert reply.status == Message.Status.STOPPED
    assert text_of(out["message"]) == reply.content and 5 <= len(reply.content.split()) < 300
