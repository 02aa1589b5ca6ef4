"""Every event type's wire shape, as clients receive it over the WebSocket (docs/streaming.md)."""

import asyncio
import re
from typing import Any

import pytest

from accounts.models import Plan
from chat.models import Conversation
from chat.titles import generate_title
from tests.helpers import connect, receive_type

pytestmark = pytest.mark.django_db(transaction=True)

CURSOR = re.compile(r"^[0-9]+-[01]$")
INT_OR_NONE = (int, type(None))
STR_OR_NONE = (str, type(None))
CONVERSATION = {"id": int, "title": str, "model": str, "system_prompt": str, "preset": INT_OR_NONE, "preset_version": INT_OR_NONE, "created": str, "updated": str, "archived": bool, "source": str}
MESSAGE = {
    "id": int, "conversation": int, "parent": INT_OR_NONE, "siblings": list, "role": str, "content": str, "status": str,
    "error": (dict, type(None)), "notice": STR_OR_NONE, "routing": (dict, type(None)), "provider": STR_OR_NONE, "model": STR_OR_NONE,
    "model_version": STR_OR_NONE, "usage": dict, "ttft_ms": INT_OR_NONE, "duration_ms": INT_OR_NONE,
    "cursor": STR_OR_NONE, "attachments": list, "created": str,
}
USAGE = {"prompt_tokens": INT_OR_NONE, "completion_tokens": INT_OR_NONE, "estimated": bool, "cost_usd": STR_OR_NONE}
# Which model answered a reply, and how it came to (a failover, a routing rule): on its final event.
ANSWERED = {"model": STR_OR_NONE, "notice": STR_OR_NONE, "routing": (dict, type(None))}
LIMIT = {"name": str, "label": str, "unit": str, "allowed": (int, float), "remaining": (int, float),
         "resets_at": STR_OR_NONE, "resets_in": INT_OR_NONE}


def assert_shape(event: dict[str, Any], fields: dict[str, Any], optional: dict[str, Any] | None = None) -> None:
    """Exactly these fields (plus any of `optional`), each of its type; nested dicts by their own shape."""
    optional = optional or {}
    assert set(fields) <= set(event) <= set(fields) | set(optional), f"fields {sorted(event)} != {sorted(fields)}"
    for name, kind in {**fields, **optional}.items():
        if name not in event:
            continue
        if isinstance(kind, dict):
            assert isinstance(event[name], dict), name
            assert_shape(event[name], kind)
        else:
            assert isinstance(event[name], kind) and not (kind is int and isinstance(event[name], bool)), (name, event[name])


async def next_of(tab, event_type: str) -> dict[str, Any]:
    return await receive_type(tab, event_type, timeout=20)


async def test_message_delta_and_done_events_have_their_shapes(alice):
    sender, other = await connect(alice), await connect(alice)
    await sender.connect()
    await other.connect()
    await sender.send_json_to({"type": "send", "conversation": None, "content": "shapes /words 5", "ref": "r1"})
    sent = await next_of(sender, "message")
    assert_shape(sent, {"type": str, "conversation": CONVERSATION, "user_message": MESSAGE, "assistant_message": MESSAGE,
                        "ref": str})
    notice = await next_of(other, "message")  # another tab hears of it with the sending socket's id
    assert_shape(notice, {"type": str, "conversation": CONVERSATION, "user_message": MESSAGE, "assistant_message": MESSAGE,
                          "origin": str})
    delta = await next_of(sender, "delta")
    assert_shape(delta, {"type": str, "message": int, "cursor": str, "text": str})
    assert CURSOR.match(delta["cursor"]) and delta["message"] == sent["assistant_message"]["id"]
    done = await next_of(sender, "done")
    assert_shape(done, {"type": str, "message": int, "cursor": str, "status": str, "usage": USAGE,
                        "finish_reason": STR_OR_NONE, "model_version": STR_OR_NONE, "ttft_ms": INT_OR_NONE,
                        "duration_ms": INT_OR_NONE, **ANSWERED})
    assert done["status"] == "complete" and done["cursor"].endswith("-1")
    assert done["model"] == sent["assistant_message"]["model"]
    await sender.disconnect()
    await other.disconnect()


async def test_a_failed_reply_ends_with_an_error_event_of_its_shape(alice):
    tab = await connect(alice)
    await tab.connect()
    await tab.send_json_to({"type": "send", "conversation": None, "content": "please /fail overloaded"})
    await next_of(tab, "message")
    error = await next_of(tab, "error")
    assert_shape(error, {"type": str, "message": int, "cursor": str, "status": str, "code": str, "text": str,
                         "retry_after": (int, float, type(None)), **ANSWERED})
    assert error["status"] == "failed" and error["code"] == "overloaded"
    await tab.disconnect()


async def test_request_errors_have_their_shape_with_ref_and_limit(alice):
    await Plan.objects.filter(name="Free").aupdate(requests_per_minute=1)
    tab = await connect(alice)
    await tab.connect()
    await tab.send_json_to({"type": "attach", "message": 999999, "after": "", "ref": 7})
    refused = await next_of(tab, "error")
    assert_shape(refused, {"type": str, "message": type(None), "code": str, "text": str, "retry_after": type(None),
                           "ref": int})
    await tab.send_json_to({"type": "send", "conversation": None, "content": "one /words 1"})
    await next_of(tab, "done")
    await tab.send_json_to({"type": "send", "conversation": None, "content": "two /words 1", "ref": "s2"})
    limited = await next_of(tab, "error")
    assert_shape(limited, {"type": str, "message": type(None), "code": str, "text": str, "retry_after": (int, float),
                           "ref": str, "limit": LIMIT})
    assert limited["code"] == "quota_exceeded"
    await tab.disconnect()


async def test_stopping_and_conversation_events_have_their_shapes(alice):
    tab = await connect(alice)
    await tab.connect()
    await tab.send_json_to({"type": "send", "conversation": None, "content": "Plan a trip /words 400 /slow 20"})
    sent = await next_of(tab, "message")
    await next_of(tab, "delta")
    await tab.send_json_to({"type": "stop", "message": sent["assistant_message"]["id"], "ref": "stop"})
    stopping = await next_of(tab, "stopping")
    assert_shape(stopping, {"type": str, "message": int, "status": str, "ref": str})
    assert stopping["status"] in {"stopping", "stopped"}
    await next_of(tab, "done")
    await tab.send_json_to({"type": "send", "conversation": None, "content": "Plan a weekend in Porto /words 3"})
    created = await next_of(tab, "message")
    seen: list[dict[str, Any]] = []
    while not any(event["type"] == "done" for event in seen):
        seen.append(await tab.receive_json_from(timeout=10))
    # Named at its first send; emptied here as a conversation from before that was, so that its
    # title task names it and announces it.
    await Conversation.objects.filter(pk=created["conversation"]["id"]).aupdate(title="")
    await asyncio.to_thread(generate_title, created["conversation"]["id"])
    while not any(event["type"] == "conversation" for event in seen):
        seen.append(await tab.receive_json_from(timeout=10))
    changed = next(event for event in seen if event["type"] == "conversation")
    assert_shape(changed, {"type": str, "conversation": CONVERSATION})
    await tab.disconnect()
