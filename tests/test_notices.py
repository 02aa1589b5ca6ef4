"""A user's other tabs hear of new replies and titles; nobody else does."""

import asyncio

import pytest

from chat.models import Conversation
from chat.titles import generate_title
from tests.helpers import connect, receive_until_final

pytestmark = pytest.mark.django_db(transaction=True)


async def test_other_tabs_of_the_same_user_hear_of_a_send_and_can_follow_it(alice, bob):
    sender, second_tab, stranger = await connect(alice), await connect(alice), await connect(bob)
    for communicator in (sender, second_tab, stranger):
        assert (await communicator.connect())[0]
    await sender.send_json_to({"type": "send", "conversation": None, "content": "hello /words 30", "ref": "mine"})
    created = await sender.receive_json_from(timeout=5)
    notice = await second_tab.receive_json_from(timeout=5)
    assert notice["type"] == "message"
    assert notice["assistant_message"]["id"] == created["assistant_message"]["id"]
    assert "ref" not in notice
    await second_tab.send_json_to({"type": "attach", "message": notice["assistant_message"]["id"], "after": ""})
    deltas, final = await receive_until_final(second_tab, notice["assistant_message"]["id"])
    assert final["status"] == "complete" and len("".join(d["text"] for d in deltas).split()) == 30
    await receive_until_final(sender, created["assistant_message"]["id"])
    assert await stranger.receive_nothing(timeout=0.3)
    sent_own = []
    while not await sender.receive_nothing(timeout=0.2):
        sent_own.append(await sender.receive_json_from())
    assert all(event.get("type") != "message" for event in sent_own)  # no echo of its own send
    for communicator in (sender, second_tab, stranger):
        await communicator.disconnect()


async def test_a_first_send_names_the_conversation_at_once(alice):
    tab = await connect(alice)
    await tab.connect()
    await tab.send_json_to({"type": "send", "conversation": None, "content": "Plan a **trip** to Lisbon /words 3"})
    created = await tab.receive_json_from(timeout=5)
    assert created["conversation"]["title"] == "Plan a trip to Lisbon"  # plain words, no demo controls
    seen: list[dict] = []
    while not any(event["type"] == "done" for event in seen):
        seen.append(await tab.receive_json_from(timeout=10))
    # The demo model has nothing better to offer: no title task changes it, and nothing is announced.
    assert await asyncio.to_thread(generate_title, created["conversation"]["id"]) is None
    assert await tab.receive_nothing(timeout=0.3)
    await tab.disconnect()


async def test_a_new_title_reaches_the_open_tabs(alice):
    tab = await connect(alice)
    await tab.connect()
    await tab.send_json_to({"type": "send", "conversation": None, "content": "Plan a trip to Lisbon /words 3"})
    created = await tab.receive_json_from(timeout=5)
    seen: list[dict] = []
    while not any(event["type"] == "done" for event in seen):
        seen.append(await tab.receive_json_from(timeout=10))
    # A conversation from before first sends named it: its title task names it, once.
    await Conversation.objects.filter(pk=created["conversation"]["id"]).aupdate(title="")
    await asyncio.to_thread(generate_title, created["conversation"]["id"])
    while not any(event["type"] == "conversation" for event in seen):
        seen.append(await tab.receive_json_from(timeout=5))
    titles = [event["conversation"] for event in seen if event["type"] == "conversation"]
    assert len(titles) == 1
    assert titles[0]["id"] == created["conversation"]["id"]
    assert titles[0]["title"] == "Plan a trip to Lisbon"
    assert await asyncio.to_thread(generate_title, created["conversation"]["id"]) is None  # idempotent
    assert await tab.receive_nothing(timeout=0.3)
    await tab.disconnect()
