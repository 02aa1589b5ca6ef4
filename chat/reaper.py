"""Finds replies whose web process died mid-generation and marks them `interrupted`, text kept."""

import logging
from datetime import timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import calls, ledger, quotas
from billing.models import UsageRecord
from chat.models import ChatModel, Conversation, Message, Source
from parley.redis_clients import get_many, sync_client
from streaming import events
from streaming.keys import heartbeat_key
from streaming.writer import SyncWriter

logger = logging.getLogger(__name__)


def reap_interrupted(client: redis.Redis | None = None) -> list[int]:
    """Mark every active reply whose generator has stopped heart-beating; return their ids."""
    client = client or sync_client()
    grace = timezone.now() - timedelta(seconds=settings.PARLEY_HEARTBEAT_TTL)
    candidates = list(
        Message.objects.filter(status__in=Message.ACTIVE, created__lt=grace).values_list("id", "generator", "content")
    )
    if not candidates:
        return []
    generators = sorted({generator for _, generator, _ in candidates})
    beats = get_many(client, [heartbeat_key(generator) for generator in generators])
    alive = {generator for generator, beat in zip(generators, beats, strict=True) if beat}
    reaped = []
    for message_id, generator, checkpoint in candidates:
        if generator in alive:
            continue
        if end_orphan(client, message_id, checkpoint):
            reaped.append(message_id)
    if reaped:
        logger.warning("Marked %d replies interrupted: %s", len(reaped), reaped)
    return reaped


def generator_is_gone(client: redis.Redis, message: Message) -> bool:
    """True when the reply's process stopped heart-beating (and had the time to start)."""
    grace = timezone.now() - timedelta(seconds=settings.PARLEY_HEARTBEAT_TTL)
    return message.created < grace and not client.exists(heartbeat_key(message.generator))


def _charge_orphan(message_id: int, text: str, status: str) -> None:
    """The dead process never wrote the reply's ledger row or settled its budget: do both here,
    from the reservation stored with the reply and the text that was kept (tokens estimated)."""
    message = Message.objects.select_related("conversation").get(pk=message_id)
    parsed = quotas.Reservation.from_claim(message.conversation.owner_id, message.quota_claim)
    if parsed is None:
        return  # replies from before budgets were reserved carry no claim
    reservation, prompt_estimate = parsed
    model = ChatModel.objects.filter(provider=message.provider, name=message.model).first()
    pricing = ledger.Pricing.of(model.input_price_per_million, model.output_price_per_million) if model else ledger.Pricing(known=False)
    gateway = message.conversation.source == Source.GATEWAY
    call = ledger.Call(
        user_id=reservation.user_id, kind=UsageRecord.Kind.GATEWAY if gateway else UsageRecord.Kind.REPLY,
        provider=message.provider, model=message.model,
        pricing=pricing, prompt_estimate=prompt_estimate, conversation_id=message.conversation_id, message_id=message_id,
        reserved_output=reservation.tokens - prompt_estimate, endpoint=model.endpoint if model else "",
        api_token_id=message.conversation.api_token_id,
    )
    settled = calls.settle(call, reservation, status, None, None, text, None)
    if settled is not None:  # the reply shows what its ledger row holds
        entry = settled.entry
        Message.objects.filter(pk=message_id).update(
            prompt_tokens=entry.prompt_tokens, completion_tokens=entry.completion_tokens,
            tokens_estimated=entry.estimated, cost_usd=None if entry.price_unknown else entry.cost_usd,
        )


def end_orphan(client: redis.Redis, message_id: int, checkpoint: str, status: str = Message.Status.INTERRUPTED) -> bool:
    """End a reply nobody is generating any more: keep its text, mark it, close its event log."""
    writer = SyncWriter(client)
    entries = writer.read_all(message_id)
    logged = "".join(entry.text for entry in entries if not entry.is_final)
    # The log holds every delta that was flushed; the checkpoint is a prefix of it unless the log expired.
    text = logged if len(logged) >= len(checkpoint) else checkpoint
    with transaction.atomic():
        updated = Message.objects.filter(pk=message_id, status__in=Message.ACTIVE).update(
            status=status,
            content=text,
            error_text="The server stopped while writing this reply; the text so far is kept."
            if status == Message.Status.INTERRUPTED
            else "",
            last_cursor=events.cursor_for(len(text), 1),
            finished=timezone.now(),
        )
        if not updated:
            return False
        _charge_orphan(message_id, text, status)
    if not any(entry.is_final for entry in entries):
        ending: list[events.DeltaEvent | events.DoneEvent] = []
        if len(text) > len(logged):
            # The log lost text that the checkpoint kept: readers resume from the checkpoint's end.
            ending.append(events.delta(message_id, len(text), text[len(logged):]))
        ending.append(events.done(message_id, len(text), status))
        writer.append(message_id, ending)
    # A gateway call its token does not store: charged and ended, its conversation goes.
    Conversation.objects.filter(messages__pk=message_id, discard_when_done=True).delete()
    return True
