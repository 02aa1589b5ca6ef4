"""Prompt presets and their versions: a new version for each edit of the text, rollbacks, the
history admins read, how a conversation takes a preset, and the one question the send path asks:
which system prompt does a conversation's next reply get (`resolve_system`).

A conversation that took a preset and kept its text as offered *follows* it: its
`preset_version` is set, and each reply gets the preset's current version, recorded on the
conversation and on the reply. A conversation whose text was edited by hand keeps its own copy:
`preset` still names the preset it started from, `preset_version` is empty. One field thus says
whether a conversation follows, with no flag to keep in step with it.
"""

import difflib
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Max

from accounts.models import User
from chat.models import SYSTEM_PROMPT_MAX, Conversation, PromptPreset, PromptPresetVersion
from parley import statements

NOTE_MAX = 200
FIRST_LINE_MAX = 120


class PresetError(ValueError):
    """A refused change to a preset, said in words an admin can act on."""


@dataclass(frozen=True, slots=True)
class ResolvedSystem:
    """The system prompt a conversation's next reply gets, and where it came from."""

    text: str
    version_id: int | None  # the preset version whose text it is; None: the conversation's own text
    label: str  # "Pirate v3", "Pirate (edited)"; empty for a text written by hand
    preset: dict[str, Any] | None = None  # the reply's record: {"id", "name", "version", "edited"}
    version: PromptPresetVersion | None = field(default=None, compare=False)

    def routing(self) -> dict[str, Any]:
        """What a reply's `routing` gets, merged into what others put there."""
        return {"preset": self.preset} if self.preset else {}

    def follow(self, conversation: Conversation) -> dict[str, Any]:
        """Point a following conversation at the version this reply gets (so its `as_dict` says
        it); the columns to store, empty when they already say so."""
        if self.version is None:
            return {}
        moved = conversation.preset_version_id != self.version.pk or conversation.system_prompt != self.text
        conversation.preset_version = self.version
        conversation.system_prompt = self.text
        return {"preset_version": self.version.pk, "system_prompt": self.text} if moved else {}


def resolve_system(conversation: Conversation) -> ResolvedSystem:
    """The system prompt for the conversation's next reply: the current version's text if it
    follows its preset, else its own text. No query for a conversation without a preset; one or two
    precompiled single-row reads otherwise (the send path's transaction)."""
    own = ResolvedSystem(conversation.system_prompt, None, "")
    if conversation.preset_id is None:
        return own
    preset = statements.select_one(PromptPreset, {"id": conversation.preset_id})
    if not isinstance(preset, PromptPreset):
        return own
    if conversation.preset_version_id is None:  # edited by hand: its own copy, noted as from the preset
        record = {"id": preset.pk, "name": preset.name, "version": None, "edited": True}
        return ResolvedSystem(conversation.system_prompt, None, f"{preset.name} (edited)", record)
    version = None
    if preset.current_version_id is not None:
        version = statements.select_one(PromptPresetVersion, {"id": preset.current_version_id})
    if not isinstance(version, PromptPresetVersion):
        return own  # a preset without versions (none is made so): the copy its last reply got
    record = {"id": preset.pk, "name": preset.name, "version": version.number, "edited": False}
    return ResolvedSystem(version.text, version.pk, f"{preset.name} v{version.number}", record, version)


def choose(conversation: Conversation, preset: PromptPreset | None, text: str | None) -> None:
    """Set a (perhaps unsaved) conversation's prompt as its owner chose it. `text` None: not given.

    A preset alone: the conversation follows it, from its current version. A text alone: written
    by hand, from no preset. Both: it follows the preset if the text is the preset's as offered
    (its current version's, or the copy the conversation already follows, shown before a newer
    version reached it); otherwise the text is the conversation's own, noting the preset."""
    if preset is None:
        if text is not None:
            conversation.system_prompt = text
        conversation.preset, conversation.preset_version = None, None
        return
    current = preset.current_version
    already_following = (
        conversation.preset_id == preset.pk and conversation.preset_version_id is not None
        and text == conversation.system_prompt
    )
    conversation.preset = preset
    if already_following:
        return
    if text is None or (current is not None and text == current.text):
        conversation.system_prompt = current.text if current is not None else conversation.system_prompt
        conversation.preset_version = current
    else:
        conversation.system_prompt = text
        conversation.preset_version = None


def clean_text(text: object) -> str:
    if not isinstance(text, str) or len(text) > SYSTEM_PROMPT_MAX:
        raise PresetError(f"The text must be at most {SYSTEM_PROMPT_MAX:,} characters.")
    text = text.strip()
    if not text:
        raise PresetError("The text cannot be empty.")
    return text


def clean_note(note: object) -> str:
    if not isinstance(note, str) or len(note.strip()) > NOTE_MAX:
        raise PresetError(f"The note must be at most {NOTE_MAX} characters.")
    return " ".join(note.split())


def create_preset(name: str, text: str, *, by: User | None = None, enabled: bool = True, sort: int = 100) -> PromptPreset:
    """A new preset with its version 1."""
    with transaction.atomic():
        preset = PromptPreset.objects.create(name=name, enabled=enabled, sort=sort)
        revise(preset, text, by=by)
    return preset


def revise(preset: PromptPreset, text: object, *, by: User | None, note: object = "") -> PromptPresetVersion | None:
    """A new version with this text, made current; None (and nothing written) when the text is
    the current one's. Old versions are never changed."""
    text, note = clean_text(text), clean_note(note)
    with transaction.atomic():
        locked = _locked(preset)
        if locked.current_version is not None and locked.current_version.text == text:
            return None
        return _add_version(preset, text, by=by, note=note)


def roll_back(preset: PromptPreset, number: object, *, by: User | None) -> PromptPresetVersion:
    """Put an earlier version's text in force again, as a NEW version copying it.

    A new version rather than moving `current_version` back: the history stays a list that only
    grows, in which the rollback is a row of its own saying who did it and when; a version's
    number keeps meaning one moment of the preset's life (replies record it), and following
    conversations see the number change, so they take the text at their next reply."""
    if isinstance(number, str) and number.isascii() and number.isdigit() and len(number) <= 9:
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise PresetError("Pick a version to roll back to by its number.")
    with transaction.atomic():
        locked = _locked(preset)
        earlier = PromptPresetVersion.objects.filter(preset=preset, number=number).first()
        if earlier is None:
            raise PresetError(f"This preset has no version {number}.")
        current = locked.current_version
        if current is not None and current.pk == earlier.pk:
            raise PresetError(f"Version {number} is already in force.")
        if current is not None and current.text == earlier.text:
            raise PresetError(f"Version {current.number}, in force, already has the text of version {number}.")
        return _add_version(preset, earlier.text, by=by, note=f"Rolled back to version {number}.", restored_from=earlier)


def _locked(preset: PromptPreset) -> PromptPreset:
    """The preset's row, held until the transaction ends: two admins saving at once number their
    versions one after the other."""
    return PromptPreset.objects.select_for_update(of=("self",)).select_related("current_version").get(pk=preset.pk)


def _add_version(
    preset: PromptPreset, text: str, *, by: User | None, note: str, restored_from: PromptPresetVersion | None = None
) -> PromptPresetVersion:
    last = PromptPresetVersion.objects.filter(preset=preset).aggregate(last=Max("number"))["last"] or 0
    version = PromptPresetVersion.objects.create(
        preset=preset, number=last + 1, text=text, created_by=by, note=note, restored_from=restored_from,
    )
    preset.current_version = version
    PromptPreset.objects.filter(pk=preset.pk).update(current_version=version)
    return version


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One version as the preset's admin page lists it."""

    number: int
    created: Any
    by: str
    note: str
    first_line: str
    diff: list[tuple[str, str]]  # ("add" | "remove" | "same" | "gap", line) against the version before
    current: bool
    restored_from: int | None
    restorable: bool  # its text is not the one in force: a rollback to it would change something


def history(preset: PromptPreset) -> list[HistoryRow]:
    """The preset's versions, newest first, each with its changes against the one before it."""
    versions = list(
        PromptPresetVersion.objects.filter(preset=preset).select_related("created_by", "restored_from").order_by("number")
    )
    in_force = next((version.text for version in versions if version.pk == preset.current_version_id), None)
    rows = []
    previous: PromptPresetVersion | None = None
    for version in versions:
        rows.append(HistoryRow(
            number=version.number, created=version.created,
            by=version.created_by.get_username() if version.created_by else "",
            note=version.note, first_line=first_line(version.text),
            diff=line_diff(previous.text, version.text) if previous is not None else [],
            current=version.pk == preset.current_version_id,
            restored_from=version.restored_from.number if version.restored_from else None,
            restorable=version.text != in_force,
        ))
        previous = version
    return rows[::-1]


def first_line(text: str) -> str:
    line = text.strip().split("\n", 1)[0].strip()
    return line if len(line) <= FIRST_LINE_MAX else line[: FIRST_LINE_MAX - 1] + "…"


def line_diff(before: str, after: str) -> list[tuple[str, str]]:
    """The lines that changed, with one line of context, as (kind, line); a "gap" between hunks."""
    out: list[tuple[str, str]] = []
    hunks = 0
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=1):
        if line.startswith("@@"):
            hunks += 1
            if hunks > 1:
                out.append(("gap", "…"))
        elif hunks:  # the two header lines come before the first hunk
            out.append(({"+": "add", "-": "remove"}.get(line[:1], "same"), line[1:]))
    return out
