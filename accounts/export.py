"""Everything Parley holds of one user, as one JSON document written a piece at a time.

The document: the account, every conversation (archived ones too) with every message of every
branch (`parent` rebuilds the tree), its files (their names, types and sizes, never their bytes)
and its agent runs (steps summed up, artifacts whole); the feedback the user gave, their share
links and API tokens (names and prefixes: the secrets are not stored), and their ledger rows.

Conversations are read in batches from one `.iterator()`, their messages from another, and the
text comes out in chunks of about CHUNK_BYTES: a user with 10,000 conversations is never in
memory at once. Only rows owned by the user are read."""

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

import orjson
from django.utils import timezone

from accounts.models import ApiToken, Plan, User
from agents.models import AgentRun, AgentStep, Artifact
from billing.models import UsageRecord
from chat.models import Conversation, Message, Upload
from sharing.models import SharedLink
from support.models import Feedback

FORMAT = "parley-data/1"
BATCH = 100  # conversations whose messages, files and runs are read together
ROWS = 2000  # rows per fetch of an .iterator()
CHUNK_BYTES = 64 * 1024

MESSAGE_FIELDS = (
    "id", "conversation_id", "parent_id", "role", "content", "status", "error_code", "model", "prompt_tokens",
    "completion_tokens", "tokens_estimated", "cost_usd", "created", "finished",
)
UPLOAD_FIELDS = ("id", "conversation_id", "name", "content_type", "size", "created")  # not `data`, not `text`
RUN_FIELDS = (
    "id", "conversation_id", "goal", "model", "status", "result", "error_code", "tokens", "cost_usd", "created", "started",
    "finished",
)
STEP_FIELDS = ("run_id", "index", "kind", "title", "status", "tool", "tokens", "cost_usd", "started", "finished")
ARTIFACT_FIELDS = ("run_id", "name", "content_type", "content", "created")
USAGE_FIELDS = (
    "id", "conversation_id", "message_id", "kind", "provider", "model", "prompt_tokens", "completion_tokens", "estimated",
    "cost_usd", "outcome", "error_code", "created",
)


def filename(user: User) -> str:
    return f"parley-data-{user.get_username()}-{timezone.localdate().isoformat()}.json"


def document(user: User, link_url: Callable[[str], str]) -> Iterator[bytes]:
    """The user's data, in chunks that join into one JSON object. `link_url` makes a share link's
    path absolute (the request knows the site's address)."""
    return _chunked(_pieces(user, link_url))


def _pieces(user: User, link_url: Callable[[str], str]) -> Iterator[bytes]:
    header = {"format": FORMAT, "exported": timezone.now(), "account": _account(user)}
    yield _dumps(header)[:-1] + b',"conversations":['
    yield from _conversations(user)
    yield b'],"feedback":'
    yield _dumps(list(Feedback.objects.filter(user=user, conversation__owner=user).order_by("pk").values(
        "message_id", "conversation_id", "rating", "comment", "model", "created", "updated")))
    yield b',"share_links":'
    yield _dumps([_link(link, link_url) for link in SharedLink.objects.filter(owner=user).order_by("pk")])
    yield b',"api_tokens":'
    yield _dumps(list(ApiToken.objects.filter(user=user).order_by("pk").values("name", "prefix", "created", "last_used", "revoked")))
    yield b',"usage":['
    usage = UsageRecord.objects.filter(user=user).order_by("pk").values(*USAGE_FIELDS)
    yield from _joined(_dumps(row) for row in usage.iterator(chunk_size=ROWS))
    yield b"]}"


def _account(user: User) -> dict[str, Any]:
    plan = user.plan if user.plan_id else Plan.default()
    return {
        "username": user.get_username(),
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "date_joined": user.date_joined,
        "last_login": user.last_login,
        "plan": plan.name if plan is not None else None,
    }


def _link(link: SharedLink, link_url: Callable[[str], str]) -> dict[str, Any]:
    # The user's own links: their addresses are theirs to keep (a revoked one opens nothing).
    return {
        "id": link.pk, "url": link_url(link.path()), "conversation_id": link.conversation_id, "title": link.title,
        "show_owner": link.show_owner, "created": link.created, "revoked": link.revoked_at,
    }


def _conversations(user: User) -> Iterator[bytes]:
    """The conversations in id order, commas between them; each one's messages a piece at a time."""
    rows = Conversation.objects.filter(owner=user).select_related("model").order_by("pk").iterator(chunk_size=ROWS)
    first = True
    for batch in itertools.batched(rows, BATCH):
        ids = [conversation.pk for conversation in batch]
        uploads = _by(Upload.objects.filter(conversation_id__in=ids, owner=user).values(*UPLOAD_FIELDS), "conversation_id")
        runs = _runs(user, ids)
        files = _by(Message.attachments.through.objects.filter(upload__conversation_id__in=ids)
                    .order_by("upload_id").values("message_id", "upload_id"), "message_id")
        # The batch's messages in one pass, in the conversations' order: groups meet them one by one.
        messages = (Message.objects.filter(conversation_id__in=ids).order_by("conversation_id", "id")
                    .values(*MESSAGE_FIELDS).iterator(chunk_size=ROWS))
        groups = itertools.groupby(messages, key=lambda row: row["conversation_id"])
        group = next(groups, None)
        for conversation in batch:
            record = {
                "id": conversation.pk, "title": conversation.display_title, "model": conversation.model.name,
                "system_prompt": conversation.system_prompt, "archived": conversation.archived,
                "created": conversation.created, "updated": conversation.updated,
                "uploads": [_without(row, "conversation_id") for row in uploads.get(conversation.pk, [])],
                "agent_runs": runs.get(conversation.pk, []),
            }
            yield (b"" if first else b",") + _dumps(record)[:-1] + b',"messages":['
            first = False
            if group is not None and group[0] == conversation.pk:
                yield from _joined(_dumps(_message(row, files)) for row in group[1])
                group = next(groups, None)
            yield b"]}"


def _message(row: dict[str, Any], files: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    record = _without(row, "conversation_id")
    record["parent"] = record.pop("parent_id")
    record["attachments"] = [link["upload_id"] for link in files.get(row["id"], [])]
    return record


def _runs(user: User, conversation_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    runs = list(AgentRun.objects.filter(owner=user, conversation_id__in=conversation_ids).order_by("pk").values(*RUN_FIELDS))
    run_ids = [run["id"] for run in runs]
    steps = _by(AgentStep.objects.filter(run_id__in=run_ids).order_by("run_id", "index").values(*STEP_FIELDS), "run_id")
    artifacts = _by(Artifact.objects.filter(run_id__in=run_ids).order_by("pk").values(*ARTIFACT_FIELDS), "run_id")
    by_conversation: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        run["steps"] = [_without(step, "run_id") for step in steps.get(run["id"], [])]
        run["artifacts"] = [_without(artifact, "run_id") for artifact in artifacts.get(run["id"], [])]
        by_conversation[run.pop("conversation_id")].append(run)
    return by_conversation


def _by(rows: Iterable[dict[str, Any]], key: str) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row[key]].append(row)
    return grouped


def _without(row: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name != key}


def _joined(items: Iterable[bytes]) -> Iterator[bytes]:
    """JSON values with commas between them."""
    for index, item in enumerate(items):
        yield b"," + item if index else item


def _chunked(pieces: Iterable[bytes]) -> Iterator[bytes]:
    buffer: list[bytes] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")  # exact, as stored, never in exponent form
    raise TypeError(f"{type(value).__name__} is not JSON")


def _dumps(value: object) -> bytes:
    return orjson.dumps(value, default=_default)
