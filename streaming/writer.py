"""The event log's writer for sync code: the reaper today, Celery workers next.

It stores the same entries as the async writer in web processes (streaming/eventlog.py), built by
the same `Entry.of`, so a reader cannot tell who wrote an entry.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import redis
from django.conf import settings

from parley.redis_clients import is_cluster, sync_client
from streaming.entries import Entry
from streaming.keys import events_key, run_cancel_key, run_events_key, run_owner_key, stop_key

# How long a stop flag waits for the reply's process to read it.
STOP_FLAG_SECONDS = 3600
# A run's owner key lasts as long as a run may (a week: approvals wait a day by default); after
# that, doors ask the database. It goes a minute before a finished run's log.
RUN_OWNER_SECONDS = 7 * 86_400
OWNER_EXPIRES_EARLIER = 60
# Keys per UNLINK command when logs are dropped: a deletion of thousands of replies is one round
# trip, and no single command holds Redis up for long.
UNLINK_BATCH = 1000


class SyncWriter:
    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client or sync_client()

    def append(self, message_id: int, new_events: Iterable[Mapping[str, Any]]) -> list[Entry]:
        """Append events to a reply's log in one round trip (see `_append`)."""
        return self._append(events_key(message_id), new_events)

    def append_run(self, run_id: int, new_events: Iterable[Mapping[str, Any]], owner_id: int | None = None) -> list[Entry]:
        """Append events to an agent run's log, as a Celery worker does at each step. With the
        final one, the run's owner key is written to go a minute before the log: a door that finds
        the owner finds the log too."""
        owner = (run_owner_key(run_id), owner_id) if owner_id is not None else None
        return self._append(run_events_key(run_id), new_events, owner)

    def set_run_owner(self, run_id: int, owner_id: int) -> None:
        """When the run starts; never over the key its end wrote (a run may end before this lands)."""
        self.client.set(run_owner_key(run_id), owner_id, ex=RUN_OWNER_SECONDS, nx=True)

    def last_run_seq(self, run_id: int) -> int:
        """The event count of a run's log so far (0 when it is empty or gone)."""
        last = self.client.xrevrange(run_events_key(run_id), count=1)
        return int(last[0][0].split(b"-")[0]) if last else 0

    def read_run(self, run_id: int) -> list[Entry]:
        return [Entry.from_redis(entry_id, fields) for entry_id, fields in self.client.xrange(run_events_key(run_id))]

    def _append(
        self, key: str, new_events: Iterable[Mapping[str, Any]], owner: tuple[str, int] | None = None
    ) -> list[Entry]:
        """A log that got its final event expires like any finished log; an id at or below the
        log's last one (a step written again by a redelivered task) is refused by Redis and skipped."""
        entries = [Entry.of(event) for event in new_events]
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.xadd(key, entry.redis_fields, id=entry.cursor)
        if any(entry.is_final for entry in entries):
            pipe.expire(key, settings.PARLEY_STREAM_TTL)
            if owner is not None:
                pipe.set(owner[0], owner[1], ex=max(1, settings.PARLEY_STREAM_TTL - OWNER_EXPIRES_EARLIER))
        pipe.execute(raise_on_error=False)
        return entries

    def read_all(self, message_id: int) -> list[Entry]:
        return [Entry.from_redis(entry_id, fields) for entry_id, fields in self.client.xrange(events_key(message_id))]

    def request_stop(self, message_ids: Iterable[int]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.set(stop_key(message_id), "1", ex=STOP_FLAG_SECONDS)
        pipe.execute()

    def drop_logs(self, message_ids: Iterable[int], run_ids: Iterable[int] = ()) -> None:
        """The event logs of replies and runs that are gone from the database (a run's owner and
        cancel keys with its log), in one pipeline. UNLINK frees their memory off Redis's main thread."""
        keys = [events_key(message_id) for message_id in message_ids]
        keys += [key for run_id in run_ids for key in (run_events_key(run_id), run_owner_key(run_id), run_cancel_key(run_id))]
        if not keys:
            return
        pipe = self.client.pipeline(transaction=False)
        if is_cluster(self.client):  # a cluster's pipeline takes one key per UNLINK, routed to its node
            for key in keys:
                pipe.unlink(key)
        else:
            for start in range(0, len(keys), UNLINK_BATCH):
                pipe.unlink(*keys[start : start + UNLINK_BATCH])
        pipe.execute()
