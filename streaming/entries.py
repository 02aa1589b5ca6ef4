"""One entry of an event log, as every writer stores it and every reader yields it.

An entry is an event of the one schema (streaming/events.py), encoded to JSON once when it is
made, with what readers need beside it: its cursor, its type, and a delta's text. Transports
forward `payload` as it is and read `kind` and `cursor` from here, never from the JSON.

Entry ids are "<offset>-<seq>": in a reply's log a delta has seq 0 and ends at text offset
<offset>, and the final event has seq 1, so ids are cursors and also text positions. A run's log
counts events instead of characters (streaming/events.py).
"""

from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from streaming import events

Cursor = tuple[int, int]
FINAL_SEQ = 1


def parse_entry_id(raw: bytes | str) -> Cursor:
    text = raw.decode() if isinstance(raw, bytes) else raw
    offset, _, seq = text.partition("-")
    return int(offset), int(seq or 0)


@dataclass(slots=True, frozen=True)
class Entry:
    id: Cursor
    kind: str  # the event's `type`
    message: int  # the reply (or run) whose log holds it
    payload: bytes  # the event's JSON exactly as it goes on the wire
    text: str = ""  # a reply delta's text, for trimming and merging; "" for every other event

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> "Entry":
        """The entry of an event that carries its cursor: a reply's delta or final event, a run's event."""
        return cls._with(event, orjson.dumps(event), parse_entry_id(event["cursor"]))

    @classmethod
    def from_redis(cls, entry_id: bytes, fields: dict[bytes, bytes]) -> "Entry":
        """Decoded once where it leaves Redis; readers downstream use the fields, not the JSON."""
        return cls._with(orjson.loads(fields[b"e"]), fields[b"e"], parse_entry_id(entry_id))

    @classmethod
    def _with(cls, event: Mapping[str, Any], payload: bytes, cursor: Cursor) -> "Entry":
        owner = event["message"] if "message" in event else event["run"]
        text = event["text"] if event["type"] == "delta" else ""
        return cls(cursor, event["type"], owner, payload, text)

    @property
    def redis_fields(self) -> dict[str, bytes]:
        return {"e": self.payload}

    @property
    def cursor(self) -> str:
        return events.cursor_for(*self.id)

    @property
    def is_final(self) -> bool:
        return self.id[1] == FINAL_SEQ

    @property
    def start(self) -> int:
        return self.id[0] - len(self.text)

    def after(self, cursor: Cursor) -> "Entry | None":
        """This entry as seen by a reader at `cursor`: whole, trimmed to what is new, or None."""
        if self.is_final:
            return self  # the final event is always delivered, even to a reader that saw it before
        if self.id <= cursor:
            return None
        if self.start >= cursor[0]:
            return self
        return Entry.of(events.delta(self.message, self.id[0], self.text[cursor[0] - self.start :]))


def merged(batch: list[Entry]) -> list[Entry]:
    """A batch as a reader should get it: consecutive deltas (a reader catching up) become one."""
    out: list[Entry] = []
    run: list[Entry] = []
    for entry in [*batch, None]:
        if entry is not None and entry.kind == "delta":
            run.append(entry)
            continue
        if len(run) > 1:
            out.append(Entry.of(events.delta(run[0].message, run[-1].id[0], "".join(e.text for e in run))))
        else:
            out.extend(run)
        run = []
        if entry is not None:
            out.append(entry)
    return out


def visible(entries: list[Entry], cursor: Cursor) -> list[Entry]:
    """What is new to a reader at `cursor`, in order."""
    out = []
    for entry in entries:
        seen = entry.after(cursor)
        if seen is not None:
            out.append(seen)
            cursor = seen.id
    return out
