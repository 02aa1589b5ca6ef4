"""Every Redis key the streaming core uses, in one place (docs/streaming.md lists them).

Event logs end in a hash tag, `{s0}` to `{s15}` by their id: on a Redis Cluster each tag is one
slot, so a process that follows many logs needs one XREAD per tag in use, at most STREAM_TAGS,
spread over the nodes (streaming/remote.py; docs/redis.md). Other keys are read and written one at
a time (pipelines route each command to its node), so they need no tag.
"""

import re

from django.conf import settings

STREAM_TAGS = 16
_TAG = re.compile(r"\{[^{}]*\}")


def stream_tag(id_: int) -> str:
    return f"{{s{id_ % STREAM_TAGS}}}"


def tag_of(key: str) -> str:
    """The hash tag a key ends in ('' for none)."""
    found = _TAG.search(key)
    return found.group(0) if found else ""


def events_key(message_id: int) -> str:
    """A reply's event log (a Redis Stream whose entry ids are the events' cursors)."""
    return f"{settings.PARLEY_KEY_PREFIX}:msg:{message_id}:events:{stream_tag(message_id)}"


def run_events_key(run_id: int) -> str:
    """An agent run's event log: the same entries and cursors, counted in events (streaming/events.py)."""
    return f"{settings.PARLEY_KEY_PREFIX}:run:{run_id}:events:{stream_tag(run_id)}"


def stop_key(message_id: int) -> str:
    """Set by Stop from any process; the reply's own process reads it at its next flush."""
    return f"{settings.PARLEY_KEY_PREFIX}:msg:{message_id}:stop"


def heartbeat_key(generator_id: str) -> str:
    """Refreshed by a process while it writes replies; the reaper ends the replies of a lapsed one."""
    return f"{settings.PARLEY_KEY_PREFIX}:generator:{generator_id}"


def reader_wake_key(generator_id: str, tag: str = "") -> str:
    """Wakes a process's XREAD loop when it has a new stream to follow; on a cluster there is one
    loop, and one wake key, per stream tag (it must share its slot with the streams it reads)."""
    return f"{settings.PARLEY_KEY_PREFIX}:reader:{generator_id}:wake{':' + tag if tag else ''}"


def user_channel(user_id: int) -> str:
    """Pub/sub channel of one user's notices to their open tabs."""
    return f"{settings.PARLEY_KEY_PREFIX}:user:{user_id}"


def run_cancel_key(run_id: int) -> str:
    """Set by Cancel from any process; the run's worker reads it between steps and inside long ones."""
    return f"{settings.PARLEY_KEY_PREFIX}:run:{run_id}:cancel"


def run_lease_key(run_id: int) -> str:
    """Held by the one worker executing a run, refreshed while it works; a lapsed lease means the
    worker was lost and the run may be resumed elsewhere (agents/reaper.py)."""
    return f"{settings.PARLEY_KEY_PREFIX}:run:{run_id}:lease"


def run_owner_key(run_id: int) -> str:
    """The id of a run's owner, set when the run starts and expiring a little before its log: a
    door checks who may follow the run here, without a database hop (agents/attach.py)."""
    return f"{settings.PARLEY_KEY_PREFIX}:run:{run_id}:owner"
