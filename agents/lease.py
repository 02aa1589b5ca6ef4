"""The one worker executing a run holds its lease: a Redis key with the worker's token and a short
expiry, refreshed by a thread while the run works. A second delivery of the run's task finds the
lease taken and leaves; a lease that lapsed means the worker was lost (agents/reaper.py resumes)."""

import logging
import threading
import uuid

import redis
from django.conf import settings

from parley.redis_clients import get_many, sync_client
from streaming.keys import run_lease_key

logger = logging.getLogger(__name__)

# Extends the lease only while it is still ours: a worker that stalled past its lease must not take
# it back from the worker that resumed the run meanwhile.
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Lease:
    def __init__(self, run_id: int, client: redis.Redis | None = None) -> None:
        self.client = client or sync_client()
        self.key = run_lease_key(run_id)
        self.token = uuid.uuid4().hex
        self.ttl_ms = int(settings.PARLEY_RUN_LEASE_SECONDS * 1000)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        if not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self._thread = threading.Thread(target=self._keep, name=f"lease {self.key}", daemon=True)
        self._thread.start()
        return True

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl_ms / 4000):
            try:
                if not self.client.eval(_EXTEND, 1, self.key, self.token, self.ttl_ms):
                    logger.warning("Lost the lease %s: another worker resumed the run", self.key)
                    self.lost.set()
                    return
            except redis.RedisError:
                logger.warning("Could not extend the lease %s; trying again", self.key)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError:
            logger.warning("Could not release the lease %s; it lapses by itself", self.key)


def is_held(run_ids: list[int], client: redis.Redis | None = None) -> dict[int, bool]:
    if not run_ids:
        return {}
    held = get_many(client or sync_client(), [run_lease_key(run_id) for run_id in run_ids])
    return {run_id: value is not None for run_id, value in zip(run_ids, held, strict=True)}
