"""A conversation as support reads it: the branch the user saw, each message with its metadata,
the agent runs with their steps, and support's own flags and notes; personal data masked.

Plain records, so that the page, the exports and the API show the same thing."""

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Prefetch, prefetch_related_objects
from django.shortcuts import get_object_or_404

from accounts.models import Plan
from agents.models import AgentRun, AgentStep
from chat import branches, paging
from chat.models import Conversation, Message, Source, Upload
from support.listing import plan_label
from support.masking import mask
from support.models import Feedback, Flag, Note

PAGE_MESSAGES = paging.PAGE_SIZE_MAX


@dataclass
class MessageView:
    id: int
    role: str
    content: str
    masked: bool  # personal data was found and hidden: a reveal would show more
    status: str
    error_code: str
    error_text: str
    notice: str
    provider: str
    model: str
    model_version: str
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_estimated: bool
    cost_usd: Decimal | None
    ttft_ms: int | None
    duration_ms: int | None
    created: Any
    finished: Any
    limits: dict[str, Any]
    routing: dict[str, Any]  # how the model was chosen and reached (chat.Message.routing)
    versions: int
    attachments: list[str]
    feedback: dict[str, Any] | None = None
    preset: dict[str, Any] | None = None  # a reply's: the preset and version its system prompt came from
    flags: list[Flag] = field(default_factory=list)

    @property
    def preset_text(self) -> str:
        return preset_words(self.preset)

    def as_dict(self) -> dict[str, Any]:
        record = {name: value for name, value in self.__dict__.items() if name != "flags"}
        record["cost_usd"] = None if self.cost_usd is None else str(self.cost_usd)
        record["created"] = self.created.isoformat()
        record["finished"] = self.finished.isoformat() if self.finished else None
        record["flags"] = [flag_dict(flag) for flag in self.flags]
        return record


@dataclass
class StepView:
    index: int
    kind: str
    title: str
    status: str
    tool: str
    arguments: str
    result: str
    error: str
    text: str
    decided_by: str
    note: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunView:
    id: int
    goal: str
    status: str
    model: str
    result: str
    error_code: str
    error_text: str
    tokens: int
    cost_usd: Decimal
    created: Any
    finished: Any
    steps: list[StepView]

    def as_dict(self) -> dict[str, Any]:
        record = dict(self.__dict__)
        record.update(
            cost_usd=str(self.cost_usd), created=self.created.isoformat(),
            finished=self.finished.isoformat() if self.finished else None,
            steps=[step.as_dict() for step in self.steps],
        )
        return record


@dataclass
class Transcript:
    conversation: Conversation
    title: str
    messages: list[MessageView]
    earlier: bool  # older messages of the branch exist before the first one here
    runs: list[RunView]
    flags: list[Flag]  # the conversation's own, not a message's
    notes: list[Note]
    revealed: bool

    def as_dict(self) -> dict[str, Any]:
        conversation = self.conversation
        owner = conversation.owner
        return {
            "id": conversation.pk,
            "title": self.title,
            "user": owner.username,
            "plan": plan_label(owner, None if owner.plan_id else Plan.default()),
            "model": conversation.model.name,
            "system_prompt": self.system_prompt,
            "preset": self.preset,
            "created": conversation.created.isoformat(),
            "updated": conversation.updated.isoformat(),
            "archived": conversation.archived,
            "source": conversation.source,
            "api_token": conversation.api_token.name if conversation.api_token_id else None,
            "masked": not self.revealed,
            "messages": [message.as_dict() for message in self.messages],
            "agent_runs": [run.as_dict() for run in self.runs],
            "flags": [flag_dict(flag) for flag in self.flags],
            "notes": [note_dict(note) for note in self.notes],
        }

    @property
    def came_through(self) -> str:
        """Which protocol door a conversation came through, and with which token; empty for the chat's own."""
        conversation = self.conversation
        if conversation.source == Source.CHAT:
            return ""
        door = conversation.get_source_display()
        token = conversation.api_token
        return f"{door}, token '{token.name}'" if token is not None else f"{door} (its token since deleted)"

    @property
    def system_prompt(self) -> str:
        return self.conversation.system_prompt if self.revealed else mask(self.conversation.system_prompt)

    @property
    def preset(self) -> dict[str, Any] | None:
        """The preset the conversation's prompt came from: the version it follows (its last reply's)
        and the one in force now, or that its text was edited and is its own."""
        conversation = self.conversation
        preset = conversation.preset
        if preset is None:
            return None
        version = conversation.preset_version
        return {
            "id": preset.pk, "name": preset.name, "version": version.number if version else None,
            "edited": version is None, "in_force": preset.current_version.number if preset.current_version else None,
        }

    @property
    def preset_text(self) -> str:
        return preset_words(self.preset)


def preset_words(record: dict[str, Any] | None) -> str:
    """A preset record (a reply's `routing["preset"]`, or a conversation's) in words; empty for none."""
    if not record:
        return ""
    if record.get("edited") or record.get("version") is None:
        return f"{record.get('name', '?')}, its text edited by the user"
    words = f"{record.get('name', '?')}, version {record['version']}"
    in_force = record.get("in_force")
    if in_force is not None and in_force != record["version"]:
        words += f" (version {in_force} in force now: the next reply gets it)"
    return words


def flag_dict(flag: Flag) -> dict[str, Any]:
    return {
        "id": flag.pk, "message": flag.message_id, "reason": flag.reason, "by": flag.author_name,
        "at": flag.created.isoformat(), "cleared_at": flag.cleared_at.isoformat() if flag.cleared_at else None,
    }


def note_dict(note: Note) -> dict[str, Any]:
    return {"id": note.pk, "text": note.text, "by": note.author_name, "at": note.created.isoformat()}


def file_names() -> Prefetch:
    """A message's files, their names only (never their bytes)."""
    return Prefetch("attachments", queryset=Upload.objects.only("id", "name"))


def conversation_for(pk: int) -> Conversation:
    return get_object_or_404(
        Conversation.objects.select_related(
            "owner", "owner__plan", "model", "preset__current_version", "preset_version", "api_token",
        ), pk=pk,
    )


def _shown(text: str, revealed: bool) -> tuple[str, bool]:
    if revealed:
        return text, False
    hidden = mask(text)
    return hidden, hidden != text


def message_view(message: Message, *, revealed: bool, versions: int = 1, feedback: Feedback | None = None) -> MessageView:
    content, masked = _shown(message.content, revealed)
    return MessageView(
        id=message.pk, role=message.role, content=content, masked=masked, status=message.status,
        error_code=message.error_code, error_text=_shown(message.error_text, revealed)[0], notice=message.notice,
        provider=message.provider, model=message.model, model_version=message.model_version,
        prompt_tokens=message.prompt_tokens, completion_tokens=message.completion_tokens,
        tokens_estimated=message.tokens_estimated, cost_usd=message.cost_usd, ttft_ms=message.ttft_ms,
        duration_ms=message.duration_ms, created=message.created, finished=message.finished,
        limits=message.limits or {}, routing=message.routing or {}, versions=versions,
        preset=(message.routing or {}).get("preset"),
        attachments=[_shown(upload.name, revealed)[0] for upload in message.attachments.all()],
        feedback=None if feedback is None else {
            "rating": "up" if feedback.rating == Feedback.Rating.UP else "down",
            "comment": _shown(feedback.comment, revealed)[0],
        },
    )


def _json_text(value: Any, revealed: bool) -> str:
    if value in (None, "", {}, []):
        return ""
    return _shown(json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True), revealed)[0]


def run_views(conversation: Conversation, revealed: bool) -> list[RunView]:
    runs = AgentRun.objects.filter(conversation=conversation).order_by("created", "id").prefetch_related(
        "steps", "steps__decided_by"
    )
    views = []
    for run in runs:
        steps: list[AgentStep] = list(run.steps.all())
        views.append(RunView(
            id=run.pk, goal=_shown(run.goal, revealed)[0], status=run.status, model=run.model,
            result=_shown(run.result, revealed)[0], error_code=run.error_code, error_text=_shown(run.error_text, revealed)[0],
            tokens=run.tokens, cost_usd=run.cost_usd, created=run.created, finished=run.finished,
            steps=[
                StepView(
                    index=step.index, kind=step.kind, title=_shown(step.title, revealed)[0], status=step.status,
                    tool=step.tool, arguments=_json_text(step.arguments, revealed), result=_json_text(step.result, revealed),
                    error=_shown(step.error, revealed)[0], text=_shown(step.text, revealed)[0],
                    decided_by=step.decided_by.username if step.decided_by else "", note=_shown(step.note, revealed)[0],
                )
                for step in steps
            ],
        ))
    return views


def read(conversation: Conversation, *, before: int | None = None, revealed: bool = False, everything: bool = False) -> Transcript:
    """The branch the user saw, newest `PAGE_MESSAGES` (older ones by `before`), or all of it for
    an export (`everything`); masked unless `revealed` (an export given a reason)."""
    if everything:
        messages, earlier = branches.branch_messages(conversation), False
        prefetch_related_objects(messages, file_names())
    else:
        shown = paging.message_page(conversation, before, PAGE_MESSAGES)
        messages, earlier = shown.messages, shown.has_more
    siblings = branches.siblings_of(conversation, messages)
    feedback = {item.message_id: item for item in Feedback.objects.filter(conversation=conversation)}
    flags = list(Flag.objects.filter(conversation=conversation).order_by("created", "id"))
    by_message: dict[int, list[Flag]] = {}
    for flag in flags:
        if flag.message_id is not None:
            by_message.setdefault(flag.message_id, []).append(flag)
    views = []
    for message in messages:
        view = message_view(
            message, revealed=revealed, versions=len(siblings.get(message.pk, [message.pk])),
            feedback=feedback.get(message.pk),
        )
        view.flags = by_message.get(message.pk, [])
        views.append(view)
    return Transcript(
        conversation=conversation, title=_shown(conversation.display_title, revealed)[0], messages=views,
        earlier=earlier, runs=run_views(conversation, revealed),
        flags=[flag for flag in flags if flag.message_id is None],
        notes=list(Note.objects.filter(conversation=conversation).order_by("created", "id")),
        revealed=revealed,
    )


def revealed_message(conversation: Conversation, message_id: int) -> MessageView:
    """One message of the conversation unmasked, for a reveal; 404 for a message not in it."""
    message = get_object_or_404(
        Message.objects.prefetch_related(file_names()), pk=message_id, conversation=conversation
    )
    return message_view(message, revealed=True, feedback=Feedback.objects.filter(message=message).first())
