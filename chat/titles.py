"""Titles from the first exchange: asked of the conversation's model (for `auto`, of the model that wrote
the first reply), with a plain fallback."""

import logging
import re
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import transaction

from accounts.plans import limits_for
from billing import calls
from billing.models import UsageRecord
from chat.actions import ActionError
from chat.models import NO_TITLE, ChatModel, Conversation, Message
from parley.redis_clients import sync_client
from providers import AUTO
from providers.demo import without_controls
from resilience.attempts import Target, collect_once
from streaming import events
from streaming.feeds import publish_sync

logger = logging.getLogger(__name__)
TITLE_WORDS = 8
TITLE_MAX_TOKENS = 24
ASKED_SECONDS = 86_400  # how long a conversation is remembered as asked for its title

PROMPT = (
    "Write a title of at most six words for the conversation below. Answer with the title alone, "
    "no quotes, no trailing punctuation.\n\nUser: {question}\n\nAssistant: {answer}"
)


# Markdown a title has no use for: emphasis, code, headings, quotes, list marks, links and images.
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKS = re.compile(r"(\*\*|__|\*|~~|`+|^\s*(?:#{1,6}|>|[-+*]|\d+[.)])\s+)", re.MULTILINE)


def plain_title(text: str) -> str:
    """A title as plain words: the text without its Markdown, on one line."""
    return " ".join(_MARKS.sub(" ", _LINK.sub(r"\1", text)).split())


def fallback_title(question: str, demo: bool = False) -> str:
    """The question's first words: the title a conversation has from its first send until its
    model's title arrives, and for good when there is none (a failed or stopped reply, the demo)."""
    plain = plain_title(without_controls(question)) if demo else ""
    words = (plain or plain_title(question)).split()
    title = " ".join(words[:TITLE_WORDS])
    return (title + ("…" if len(words) > TITLE_WORDS else ""))[:200] or NO_TITLE


def clean_model_title(raw: str) -> str:
    return plain_title(raw).strip("\"'“”. ")[:80]


def generate_title(conversation_id: int) -> str | None:
    """Idempotent: does nothing once the conversation has more than the question's words for a
    title, or the user has named it."""
    conversation = Conversation.objects.select_related("model").filter(pk=conversation_id, title_is_auto=True).first()
    if conversation is None:
        return None
    exchange = list(conversation.messages.order_by("id").values_list("role", "content", "status", "model")[:2])
    question = next((content for role, content, _, _ in exchange if role == Message.Role.USER), "")
    answer, status, answered_by = next(
        ((content, status, model) for role, content, status, model in exchange if role == Message.Role.ASSISTANT), ("", "", "")
    )
    model = _titling_model(conversation, answered_by)
    provisional = fallback_title(question, model is not None and model.is_demo)
    if conversation.title not in ("", provisional):
        return None
    title, charge = "", None
    if model is None or model.is_demo or status != Message.Status.COMPLETE:
        title = provisional
    elif _first_ask(conversation_id):
        title, charge = _ask_model(conversation, model, question, answer)
    # else a redelivered task whose first run asked the model: it is never asked, or charged, twice.
    title = title or provisional
    with transaction.atomic():
        if charge is not None:
            charge()  # the answer's ledger row lands with the title, or neither does
        updated = Conversation.objects.filter(pk=conversation_id, title_is_auto=True, title=conversation.title).update(title=title)
    if not updated or title == conversation.title:
        return None
    conversation.title = title
    publish_sync(conversation.owner_id, events.conversation_changed(conversation.as_dict()))
    return title


def _first_ask(conversation_id: int) -> bool:
    """True once per conversation: marked before the model is asked, so that a task redelivered
    after a worker died mid-call does not ask again."""
    key = f"{settings.PARLEY_KEY_PREFIX}:title:{conversation_id}:asked"
    try:
        return bool(sync_client().set(key, "1", nx=True, ex=ASKED_SECONDS))
    except redis.RedisError:  # no limits can be checked either: the question's words will do
        logger.warning("Title for conversation %s fell back: Redis is unreachable", conversation_id)
        return False


def _titling_model(conversation: Conversation, answered_by: str) -> ChatModel | None:
    """The conversation's model; for `auto`, the model its router chose for the first reply (None
    if that model is gone): `auto` itself is never called."""
    if not conversation.model.is_auto:
        return conversation.model
    return ChatModel.objects.filter(name=answered_by).exclude(provider=AUTO).first() if answered_by else None


def _ask_model(conversation: Conversation, model: ChatModel, question: str, answer: str) -> tuple[str, Callable[[], object] | None]:
    """The model's title ("" when it failed or the owner's limits said no, and the caller falls
    back), and the call's charge, for the caller to record with the title."""
    prompt = PROMPT.format(question=question[:2000], answer=answer[:2000])
    suspended, limits = limits_for(conversation.owner_id)
    try:
        if suspended:
            return "", None
        admitted = calls.admit(
            conversation.owner_id, limits, model, "", [("user", prompt)], kind=UsageRecord.Kind.TITLE,
            max_output=TITLE_MAX_TOKENS, background=True, conversation_id=conversation.pk,
        )
    except ActionError as refused:
        logger.info("Title for conversation %s fell back: %s", conversation.pk, refused.code)
        return "", None
    # Retried before its first token and kept from a provider whose breaker is open, like every
    # call; a title has no failover: the question's words do as well.
    started = time.monotonic()
    reply, attempts = collect_once(Target.of(admitted, ""))
    reported = reply.usage
    duration_ms = int((time.monotonic() - started) * 1000)

    def charge() -> object:
        return calls.settle(
            admitted.call, admitted.reservation, "failed" if reply.error else "complete",
            reported.prompt_tokens if reported else None, reported.completion_tokens if reported else None, reply.text,
            duration_ms, str(reply.error.code) if reply.error else "",
            attempt=attempts.settled_attempt, failed_attempts=attempts.separate_attempts,
        )

    if reply.error is not None:
        logger.info("Title for conversation %s fell back: %s", conversation.pk, reply.error.code)
        return "", charge
    return clean_model_title(reply.text), charge
