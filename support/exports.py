"""What support downloads: one transcript as Markdown or JSON, and a filtered list as CSV streamed
a keyset page at a time (100,000 conversations in the memory of one page). Masked unless the
caller was given a reason."""

import csv
from collections.abc import AsyncIterator
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.text import slugify

from chat.models import Conversation
from support import listing
from support.masking import mask
from support.transcript import MessageView, Transcript, read

KINDS = {"md": "text/markdown; charset=utf-8", "json": "application/json"}
CSV_PAGE = 1000
CSV_COLUMNS = [
    "id", "user", "plan", "title", "model", "created", "updated", "archived", "flagged", "negative_feedback",
    "failed_stopped_or_interrupted",
]


def _attachment(body: bytes, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def transcript(conversation: Conversation, kind: str, *, revealed: bool) -> HttpResponse:
    if kind not in KINDS:
        raise Http404("No such format.")
    shown = read(conversation, everything=True, revealed=revealed)
    stem = f"transcript-{conversation.pk}{'' if revealed else '-masked'}"
    if kind == "json":
        body = orjson.dumps({**shown.as_dict(), "exported": timezone.now().isoformat()}, option=orjson.OPT_INDENT_2)
    else:
        body = as_markdown(shown).encode()
    return _attachment(body, KINDS[kind], f"{stem}.{kind}")


def _metadata(message: MessageView) -> str:
    parts = [message.status]
    if message.model:
        parts.append(f"{message.provider}/{message.model}" + (f" ({message.model_version})" if message.model_version else ""))
    if message.preset:
        parts.append(f"preset {message.preset_text}")
    if message.prompt_tokens is not None or message.completion_tokens is not None:
        estimated = " estimated" if message.tokens_estimated else ""
        parts.append(f"{message.prompt_tokens or 0} in + {message.completion_tokens or 0} out tokens{estimated}")
    if message.cost_usd is not None:
        parts.append(f"${message.cost_usd}")
    if message.ttft_ms is not None:
        parts.append(f"first token {message.ttft_ms} ms")
    if message.duration_ms is not None:
        parts.append(f"{message.duration_ms} ms")
    if message.error_code:
        parts.append(f"error {message.error_code}: {message.error_text}")
    return " · ".join(parts)


def as_markdown(shown: Transcript) -> str:
    conversation = shown.conversation
    lines = [
        f"# {shown.title}", "",
        f"- Conversation: {conversation.pk}", f"- User: {conversation.owner.get_username()}",
        f"- Created: {conversation.created.isoformat()}", f"- Exported: {timezone.now().isoformat()}",
        f"- Personal data: {'shown (exported with a reason)' if shown.revealed else 'masked'}",
    ]
    if shown.preset:
        lines.append(f"- Preset: {shown.preset_text}")
    if conversation.system_prompt:
        lines += ["", "## System prompt", "", shown.system_prompt]
    for message in shown.messages:
        heading = "User" if message.role == "user" else "Assistant"
        lines += ["", f"## {heading} · message {message.id}", "", f"*{message.created.isoformat()} · {_metadata(message)}*"]
        if message.notice:
            lines += ["", f"> {message.notice}"]
        lines += ["", message.content]
        if message.feedback:
            lines += ["", f"Feedback: {message.feedback['rating']}" + (f" ({message.feedback['comment']})" if message.feedback["comment"] else "")]
    for run in shown.runs:
        lines += ["", f"## Agent run {run.id} · {run.status}", "", run.goal]
        for step in run.steps:
            lines += ["", f"### Step {step.index}: {step.title} ({step.kind}, {step.status})"]
            lines += [block for block in (step.arguments, step.result, step.text, step.error) if block]
    if shown.flags or shown.notes:
        lines += ["", "## Support"]
        lines += [f"- Flag by {flag.author_name}, {flag.created.isoformat()}: {flag.reason}" for flag in shown.flags]
        lines += [f"- Note by {note.author_name}, {note.created.isoformat()}: {note.text}" for note in shown.notes]
    return "\n".join(lines) + "\n"


class _Echo:
    """A file for csv.writer that hands each line back instead of keeping it."""

    def write(self, line: str) -> str:
        return line


async def _csv_lines(filters: listing.Filters, revealed: bool) -> AsyncIterator[str]:
    """The CSV a keyset page at a time. Asynchronous on purpose: Django would read a synchronous
    iterator to its end into memory before sending a byte under ASGI."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    after: listing.Cursor | None = None
    while True:
        lines, after = await sync_to_async(_csv_page)(filters, after, revealed)
        yield lines
        if after is None:
            return


def _csv_page(filters: listing.Filters, after: listing.Cursor | None, revealed: bool) -> tuple[str, listing.Cursor | None]:
    writer = csv.writer(_Echo())
    current = listing.page(filters, after, CSV_PAGE)
    return "".join(writer.writerow(_csv_row(row, revealed)) for row in current.rows), current.next


def _csv_row(row: Any, revealed: bool) -> list[Any]:
    title = row.display_title if revealed else mask(row.display_title)
    return [
        row.pk, row.owner.get_username(), row.plan_label, _safe_cell(title),
        row.model.name, row.created.isoformat(), row.updated.isoformat(), int(row.archived), int(row.is_flagged),
        int(row.has_negative), int(row.has_problem),
    ]


def _safe_cell(text: str) -> str:
    """A spreadsheet runs a cell that starts with = + - @ as a formula; a title is the user's text."""
    return "'" + text if text[:1] in {"=", "+", "-", "@", "\t", "\r"} else text


def conversation_list(filters: listing.Filters, *, revealed: bool) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_csv_lines(filters, revealed), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    name = f"conversations-{stamp}{'' if revealed else '-masked'}.csv"
    response["Content-Disposition"] = f'attachment; filename="{slugify(name[:-4])}.csv"'
    return response
