"""A run's event log as its writers see it: the next cursor, counted in events, and the appends.

Only one writer appends to a run's log at a time: the worker that holds the run's lease while it
executes, or, while no worker does (the run is queued or waits for an approval), the web request
or reaper that changes it under the run's row lock. Each continues the count from the larger of
the run's stored `event_seq` and the log's last entry, so a resumed run never reuses a cursor.
"""

from typing import Any

from agents.models import AgentRun
from streaming import events
from streaming.entries import Entry
from streaming.feeds import publish_sync
from streaming.writer import SyncWriter


class RunLog:
    def __init__(self, run: AgentRun, writer: SyncWriter | None = None) -> None:
        self.run_id = run.pk
        self.owner_id = run.owner_id
        self.writer = writer or SyncWriter()
        self.seq = max(run.event_seq, self.writer.last_run_seq(run.pk))

    def next_seqs(self, count: int) -> int:
        """The seq the log will be at after `count` more events: stored with the database change
        they describe, in the same commit, so a reader of the database knows where to attach."""
        return self.seq + count

    def emit(self, *new_events: tuple[str, dict[str, Any]]) -> list[Entry]:
        """Append events (type, fields) in one round trip."""
        built = []
        for event_type, fields in new_events:
            self.seq += 1
            built.append(events.run_event(event_type, self.run_id, self.seq, **fields))
        return self.writer.append_run(self.run_id, built, self.owner_id)

    def notify(self, run: AgentRun) -> None:
        """Tell every open tab of the owner (a card to show, an approval to give, a run that ended)."""
        publish_sync(self.owner_id, events.run_changed(run.as_dict()))
