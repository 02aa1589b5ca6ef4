"""Conversations as the pages and the API change them (create, rename, update, delete), the
lookups that authorize every request by its owner, and the error every action raises.

Sending a message and writing its reply are not here: chat/replies.py stores a send and
chat/generation.py writes the reply.
"""

from collections.abc import Collection
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from accounts.models import User
from chat import presets, search
from chat.models import SYSTEM_PROMPT_MAX, ChatModel, Conversation, Message, PromptPreset, Source
from parley import deferred, statements
from streaming import events
from streaming.writer import SyncWriter

TITLE_MAX = 200


class ActionError(Exception):
    """A refused action; `code` is one of streaming.events.REQUEST_ERRORS."""

    def __init__(
        self, code: str, detail: str = "", retry_after: float | None = None, limit: dict[str, Any] | None = None
    ) -> None:
        super().__init__(detail or code)
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.limit = limit

    def event(self, ref: Any = None) -> dict[str, Any]:
        return dict(events.request_error(self.code, self.detail, self.retry_after, ref=ref, limit=self.limit))


def default_model() -> ChatModel:
    """A real model whenever one is offered: the one an admin made the default, else the first
    discovered one (by sort order, label, id), else any other real one; the demo model only when
    no real model is offered."""
    offered = ChatModel.objects.offered()
    real = offered.exclude(provider="demo")
    model = (
        real.filter(is_default=True).first() or real.exclude(endpoint="").first() or real.first()
        or offered.filter(is_default=True).first() or offered.first()
    )
    if model is None:
        raise ActionError("unknown_model", "No model is configured. Set an API key or enable the demo model.")
    return model


def resolve_model(name: str | None) -> ChatModel:
    if not name:
        return default_model()
    model = statements.select_one(ChatModel, {"name": name})  # a send may switch models: the hot path
    if not isinstance(model, ChatModel) or not model.is_offered:
        raise ActionError("unknown_model", f"The model {name!r} is not offered.")
    return model


def user_conversations(
    user: User, query: str = "", archived: bool = False, source: str = Source.CHAT,
) -> QuerySet[Conversation]:
    """The user's conversations that came through one door (the chat by default: the protocol
    doors' conversations, gateway/, are the scripts', not the page's); with a query, those whose
    title or message text holds it, each with the first matching message's text as `matched_text`
    (chat/search.py)."""
    if source not in Source.values:
        raise ActionError("invalid_input", f"source must be one of {', '.join(Source.values)}.")
    conversations = Conversation.objects.filter(owner=user, archived=archived, source=source).select_related(
        "model", "preset_version"
    )
    query = search.clean_query(query)
    if query:
        conversations = search.matching(conversations, query)
    return conversations


MAX_PK = 2**63 - 1  # the largest id any supported database stores; beyond it a query would overflow


def parse_pk(value: object) -> int:
    """An id from a client (a number, or digits in a string); anything else is simply not found."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ActionError("not_found")
    # int() would also take " 12", "1_2" and other scripts' digits ("１２"): ids are ASCII digits only.
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= 19):
        raise ActionError("not_found")
    pk = int(value)
    if not 0 < pk <= MAX_PK:
        raise ActionError("not_found")
    return pk


def get_conversation_for(user: User, conversation_id: object) -> Conversation:
    """The user's own conversation, or ActionError('not_found') for anything else (foreign ids included)."""
    conversation = Conversation.objects.select_related("model", "preset_version").filter(
        pk=parse_pk(conversation_id), owner=user,
    ).first()
    if conversation is None:
        raise ActionError("not_found")
    return conversation


def get_message_for(user: User, message_id: object) -> Message:
    """The user's own message, or ActionError('not_found'); every attach and stop asks, so precompiled."""
    message = statements.select_one(Message, {"id": parse_pk(message_id)}, related="conversation")
    if not isinstance(message, Message) or message.conversation.owner_id != user.pk:
        raise ActionError("not_found")
    return message


def create_conversation(
    user: User, model_name: str | None = None, title: str = "", system_prompt: str = "", preset: object = None
) -> Conversation:
    """A new conversation; with a preset and no text (or the preset's text), it follows the preset."""
    title = clean_title(title) if title else ""
    chosen = resolve_preset(preset)
    conversation = Conversation(owner=user, model=resolve_model(model_name), title=title, title_is_auto=not title)
    presets.choose(conversation, chosen, clean_system_prompt(system_prompt) if system_prompt else None)
    conversation.save(force_insert=True)
    return conversation


def clean_system_prompt(text: object) -> str:
    if not isinstance(text, str) or len(text) > SYSTEM_PROMPT_MAX:
        raise ActionError("invalid_input", f"system_prompt must be text of at most {SYSTEM_PROMPT_MAX:,} characters.")
    return text.strip()


def offered_presets() -> list[PromptPreset]:
    """Enabled presets that have a text, with the version in force."""
    return list(PromptPreset.objects.filter(enabled=True, current_version__isnull=False).select_related("current_version"))


def resolve_preset(value: object) -> PromptPreset | None:
    """An offered preset by id, with its current version; None (or absent) for none."""
    if value is None:
        return None
    try:
        pk = parse_pk(value)
    except ActionError:
        raise ActionError("invalid_input", "preset must be the id of a preset, or null.") from None
    preset = PromptPreset.objects.select_related("current_version").filter(
        pk=pk, enabled=True, current_version__isnull=False,
    ).first()
    if preset is None:
        raise ActionError("invalid_input", "That preset is not offered.")
    return preset


def clean_title(title: object) -> str:
    if not isinstance(title, str):
        raise ActionError("invalid_input", "The title must be text.")
    title = " ".join(title.split())
    if not title:
        raise ActionError("invalid_input", "The title cannot be empty.")
    return title[:TITLE_MAX]


def rename_conversation(conversation: Conversation, title: object) -> Conversation:
    conversation.title = clean_title(title)
    conversation.title_is_auto = False
    conversation.save(update_fields=["title", "title_is_auto"])
    return conversation


def update_conversation(conversation: Conversation, changes: dict[str, object]) -> Conversation:
    unknown = set(changes) - {"title", "archived", "system_prompt", "preset", "model"}
    if unknown:
        raise ActionError("invalid_input", f"Unknown fields: {', '.join(sorted(unknown))}.")
    fields = []
    if "title" in changes:
        conversation.title = clean_title(changes["title"])
        conversation.title_is_auto = False
        fields += ["title", "title_is_auto"]
    if "archived" in changes:
        if not isinstance(changes["archived"], bool):
            raise ActionError("invalid_input", "archived must be true or false.")
        conversation.archived = changes["archived"]
        fields.append("archived")
    if "system_prompt" in changes or "preset" in changes:
        fields += _change_system_prompt(conversation, changes)
    if "model" in changes:
        if not isinstance(changes["model"], str):
            raise ActionError("invalid_input", "model must be a model name.")
        conversation.model = resolve_model(changes["model"])
        fields.append("model")
    if fields:
        conversation.save(update_fields=fields)
    return conversation


def _change_system_prompt(conversation: Conversation, changes: dict[str, object]) -> list[str]:
    """As `presets.choose` says: a preset alone follows it; a text alone was written by hand, from
    no preset; both follow the preset if the text is its own, else keep the text, noting the preset."""
    preset = resolve_preset(changes.get("preset"))
    text = clean_system_prompt(changes["system_prompt"]) if "system_prompt" in changes else None
    presets.choose(conversation, preset, text)
    return ["system_prompt", "preset", "preset_version"]


def delete_conversation(conversation: Conversation) -> None:
    """The owner's Delete: the same deletion as the retention purge's (support/retention.py)."""
    delete_conversations([conversation.pk])


def delete_conversations(ids: Collection[int]) -> dict[str, int]:
    """Deletes these conversations with everything that hangs on them, in one transaction (a
    caller deleting many keeps each call's `ids` short): messages, files, agent runs with their
    steps and artifacts, share links, feedback, and support's flags and notes go with them (their
    foreign keys cascade; files and artifacts live in their rows, nothing on disk). The ledger keeps
    its rows, their conversation and message emptied: money records stay.

    Once it commits, replies still being written are told to stop (nobody is left to read them)
    and the Redis event logs of the replies and runs are dropped. Should Redis fail then, the
    finished logs still expire by themselves (PARLEY_STREAM_TTL). Returns the rows deleted per
    model, as QuerySet.delete() counts them ({"chat.Conversation": 2, "chat.Message": 14, ...})."""
    ids = list(ids)
    if not ids:
        return {}
    with transaction.atomic():
        replies = Message.objects.filter(conversation_id__in=ids, role=Message.Role.ASSISTANT).values_list("pk", "status")
        logged, active = [], []
        for pk, status in replies:
            logged.append(pk)
            if status in Message.ACTIVE:
                active.append(pk)
        # Through the reverse relation: chat does not import the agents app that builds on it.
        runs = [pk for pk in Conversation.objects.filter(pk__in=ids).values_list("agent_runs", flat=True) if pk is not None]
        deleted = Conversation.objects.filter(pk__in=ids).delete()[1]
        if logged or runs:
            deferred.after_commit(lambda: _forget_streams(active, logged, runs), "event logs of deleted conversations")
    return deleted


def _forget_streams(active: list[int], message_ids: list[int], run_ids: list[int]) -> None:
    writer = SyncWriter()
    if active:
        writer.request_stop(active)
    writer.drop_logs(message_ids, run_ids)
