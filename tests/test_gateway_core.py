"""The protocol doors' core (gateway/calls.py): a client's whole call stored, admitted, run and
followed like any reply; kept for support or deleted at its end by the token's setting; charged by
the reaper as a gateway call when its process died."""

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from accounts.models import ApiToken
from accounts.plans import limits_for
from billing import admission, ledger
from billing.models import UsageRecord
from chat.actions import ActionError
from chat.models import ChatModel, Conversation, Message, Source
from chat.reaper import reap_interrupted
from gateway import calls
from gateway.calls import CallRequest


async def run_to_end(token: ApiToken, request: CallRequest) -> tuple[dict, str, dict]:
    started = await calls.start(token, request)
    text, final = [], None
    async for piece in calls.follow(started):
        text.append(piece.text)
        final = piece.final or final
    assert final is not None
    return started, "".join(text), final


def history() -> list[dict]:
    return [
        {"role": "user", "content": "What is 6 times 7?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "name": "calculate", "arguments": '{"expression": "6*7"}'}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "user", "content": "Say it in words /words 3"},
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_stored_call_keeps_its_whole_history_and_bills_the_token(alice):
    token, _ = await database_sync_to_async(ApiToken.issue)(alice, "stored", scopes=["gateway"], stores_calls=True)
    started, text, final = await run_to_end(token, CallRequest(model="parley-demo", messages=history(), system="Be brief."))
    assert final["type"] == "done" and final["status"] == "complete" and text
    conversation = await Conversation.objects.aget(pk=started["conversation"]["id"])
    assert (conversation.source, conversation.api_token_id, conversation.system_prompt) == (Source.GATEWAY, token.pk, "Be brief.")
    stored = [m async for m in Message.objects.filter(conversation=conversation).order_by("id")]
    assert [m.role for m in stored] == ["user", "assistant", "user", "user", "assistant"]
    assert "calculate" in stored[1].content and stored[2].content.endswith("42")
    assert stored[-1].content == text and stored[-1].status == "complete"
    assert [m.parent_id for m in stored[1:]] == [m.pk for m in stored[:-1]]  # one branch, in order
    entry = await UsageRecord.objects.aget(message_id=stored[-1].pk)
    assert (entry.kind, entry.api_token_id, entry.user_id) == ("gateway", token.pk, alice.pk)


@pytest.mark.django_db(transaction=True)
async def test_a_call_its_token_does_not_store_leaves_only_its_ledger_row(alice):
    token, _ = await database_sync_to_async(ApiToken.issue)(alice, "unstored", scopes=["gateway"])
    started, text, final = await run_to_end(token, CallRequest(model="parley-demo", messages=history()))
    assert final["status"] == "complete"
    for _ in range(50):  # deleted after the commit, on the deferred threads
        if not await Conversation.objects.filter(pk=started["conversation"]["id"]).aexists():
            break
        await __import__("asyncio").sleep(0.05)
    assert not await Conversation.objects.filter(pk=started["conversation"]["id"]).aexists()
    entry = await UsageRecord.objects.aget(api_token=token)
    assert (entry.kind, entry.conversation_id, entry.message_id, entry.outcome) == ("gateway", None, None, "complete")
    assert entry.completion_tokens > 0


@pytest.mark.django_db(transaction=True)
async def test_a_history_too_long_for_the_model_is_refused_whole_not_cut(alice):
    await ChatModel.objects.filter(name="parley-demo").aupdate(context_window=600)
    token, _ = await database_sync_to_async(ApiToken.issue)(alice, "long", scopes=["gateway"])
    old = [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(ActionError) as refused:
        await calls.start(token, CallRequest(model="parley-demo", messages=[*old, {"role": "user", "content": "and now?"}]))
    assert refused.value.code == "context_too_long"
    assert not await Conversation.objects.filter(source=Source.GATEWAY).aexists()


@pytest.mark.parametrize(
    "messages, code",
    [
        ([], "invalid_input"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "invalid_input"),
        ([{"role": "user", "content": "x" * 10}], None),
    ],
)
def test_what_every_protocol_requires_of_a_call(messages, code, settings):
    settings.PARLEY_GATEWAY_MAX_CHARS = 20
    if code is None:
        calls.check(CallRequest(model="m", messages=messages))
        with pytest.raises(ActionError) as too_big:
            calls.check(CallRequest(model="m", messages=messages, system="s" * 11))
        assert too_big.value.code == "message_too_long"
        return
    with pytest.raises(ActionError) as refused:
        calls.check(CallRequest(model="m", messages=messages))
    assert refused.value.code == code


@pytest.mark.django_db
@pytest.mark.parametrize("stores", [False, True])
def test_a_gateway_call_whose_process_died_is_charged_to_its_token(stores, alice, redis_client, django_capture_on_commit_callbacks):
    token, _ = ApiToken.issue(alice, "died", scopes=["gateway"], stores_calls=stores)
    demo = ChatModel.objects.get(name="parley-demo")
    _, limits = limits_for(alice.pk)
    reservation = admission.reserve(alice.pk, limits, ledger.Pricing.of(None, None), 40, 1024)
    conversation = Conversation.objects.create(
        owner=alice, model=demo, source=Source.GATEWAY, api_token=token, discard_when_done=not stores,
    )
    reply = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content="Half a reply", provider="demo",
        model="parley-demo", generator="dead-gateway", quota_claim=reservation.claim(40),
        created=timezone.now() - timedelta(seconds=settings.PARLEY_HEARTBEAT_TTL + 30),
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert reap_interrupted(redis_client) == [reply.pk]
    entry = UsageRecord.objects.get(api_token=token)
    assert (entry.kind, entry.outcome, entry.user_id) == ("gateway", "interrupted", alice.pk)
    assert Conversation.objects.filter(pk=conversation.pk).exists() is stores


@pytest.mark.django_db
def test_the_chat_lists_its_own_conversations_and_a_script_can_list_the_gateways(alice, alice_client, bob):
    demo = ChatModel.objects.get(name="parley-demo")
    chat = Conversation.objects.create(owner=alice, model=demo, title="From the page")
    stored = Conversation.objects.create(owner=alice, model=demo, title="From a script", source=Source.GATEWAY)
    Conversation.objects.create(owner=bob, model=demo, title="Bob's script", source=Source.GATEWAY)
    listed = alice_client.get("/api/conversations/").json()["results"]
    assert [c["id"] for c in listed] == [chat.pk]
    listed = alice_client.get("/api/conversations/?source=gateway").json()["results"]
    assert [(c["id"], c["source"]) for c in listed] == [(stored.pk, "gateway")]
    refused = alice_client.get("/api/conversations/?source=everything")
    assert refused.status_code == 400 and "source must be one of" in refused.json()["error"]["text"]
    assert "From a script" not in alice_client.get("/").content.decode()


@pytest.mark.django_db(transaction=True)
async def test_an_unkept_call_never_writes_its_text(alice):
    token, _ = await database_sync_to_async(ApiToken.issue)(alice, "private", scopes=["gateway"])
    secret = "my secret plan /words 200 /slow 10"
    started = await calls.start(
        token, CallRequest(model="parley-demo", messages=[{"role": "user", "content": secret}], system="secret system"),
    )
    pieces = calls.follow(started)
    await anext(pieces)  # the reply is streaming
    rows = [(m.role, m.content) async for m in Message.objects.filter(conversation_id=started["conversation"]["id"])]
    assert rows == [("assistant", "")]
    conversation = await Conversation.objects.aget(pk=started["conversation"]["id"])
    assert (conversation.title, conversation.system_prompt) == ("Gateway call", "")
    assert not await Message.objects.filter(content__contains="secret").aexists()
    await calls.stop(alice, started["assistant_message"]["id"])
    async for _ in pieces:
        pass
