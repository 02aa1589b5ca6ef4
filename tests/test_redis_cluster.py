"""Parley on a Redis Cluster and behind Sentinel: every script's keys share one slot, readers of
many logs and the notice feed follow keys that live on different nodes, and REDIS_URL takes both
kinds. The cluster here is this module's own (3 primaries from the embedded redis-server), so the
file proves the same things whichever Redis the rest of the run uses."""

import asyncio
import os
import subprocess
import sys
import uuid
from decimal import Decimal

import orjson
import pytest
from redis.crc import key_slot

from accounts import throttle
from accounts.plans import EffectiveLimits
from billing import quotas
from breakers.scripts import breaker_keys, check_script
from observability import health
from parley import embedded_redis
from parley.redis_clients import async_client_for, bounded_async_client, is_cluster, sync_client_for
from parley.redis_urls import RedisUrlError, parse
from streaming import events
from streaming.eventlog import EventLog
from streaming.feeds import UserFeeds, publish_sync
from streaming.keys import events_key, reader_wake_key, run_events_key, tag_of, user_channel


@pytest.fixture(scope="module")
def cluster():
    made = embedded_redis.start_cluster()
    yield made
    made.stop()


@pytest.fixture
def on_cluster(cluster, settings):
    """settings.REDIS_URL names this module's cluster, and a sync client to it."""
    settings.REDIS_URL = cluster.url
    client = sync_client_for(cluster.url)
    yield client
    client.close()


def slots(keys: list[str]) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


def test_every_script_takes_keys_of_one_slot():
    windows = quotas.Windows.at(1_790_000_000.0)
    assert len(slots(quotas.keys_of(42, windows))) == 1
    assert slots(quotas.keys_of(42, windows)) != slots(quotas.keys_of(43, windows))  # users spread out
    account, address = throttle.account_id("alice"), "203.0.113.9"
    assert len(slots(throttle.failure_keys(account, address))) == 1
    assert len(slots(throttle.signup_keys(address))) == 1
    assert len(slots(breaker_keys("openai", "gpt-4o"))) == 1
    for key in (events_key(7), run_events_key(7)):
        assert len(slots([key, reader_wake_key("gen", tag_of(key))])) == 1
    # Logs of many replies fall into a bounded number of slots, so a reader needs few XREADs.
    assert len(slots([events_key(message_id) for message_id in range(1000)])) == 16


def test_scripts_and_pipelines_run_on_a_cluster(on_cluster):
    client, user_id = on_cluster, int(uuid.uuid4().int % 10**9)
    assert is_cluster(client) and len(client.get_primaries()) == 3
    limits = EffectiveLimits(plan="t", requests_per_minute=2, concurrent_replies=5, tokens_per_day=1000)
    now = 1_790_000_000.0
    admitted = [quotas.admit(client, user_id, limits, 100, Decimal("0.01"), f"m{i}", lambda *_: (0,) * 5, now=now)
                for i in range(3)]
    assert [type(result).__name__ for result in admitted] == ["Reservation", "Reservation", "Refusal"]
    assert admitted[2].limit == "requests_per_minute"
    assert quotas.refusal_counts([quotas.Windows.at(now).day])[(quotas.Windows.at(now).day, user_id, "requests_per_minute")] == 1
    user_cost, _site = quotas.settle(client, admitted[0], 40, Decimal("0.002"))
    assert user_cost == 12_000  # micro-dollars: 0.002 settled and 0.01 still reserved
    keys = throttle.failure_keys(throttle.account_id(f"u{user_id}"), "198.51.100.7")
    replies = client.eval(throttle.FAILED, len(keys), *keys, 60, 1000, 8000, 3600, 5, 20, 50, "198.51.100.7")
    assert replies[:3] == [0, 0, 0]
    assert check_script.run(client, breaker_keys("cluster-test", f"m{user_id}"), [1000, 1000, "closed"])
    client.delete(*keys, *(key for result in admitted[:2] for key in quotas.keys_of(user_id, result.windows)))


async def test_a_bounded_cluster_client_queues_callers_beyond_its_pool(on_cluster):
    client = bounded_async_client(4, 5.0)
    try:
        replies = await asyncio.gather(*(client.get(f"parley-bounded-{index}") for index in range(200)))
        assert replies == [None] * 200
    finally:
        await client.aclose()


def _message_ids_on_every_node(client) -> list[int]:
    by_node: dict[str, int] = {}
    for message_id in range(900_000_000, 900_000_016):
        by_node.setdefault(client.get_node_from_key(events_key(message_id)).name, message_id)
    assert len(by_node) == 3, "the 16 stream tags should spread over the three primaries"
    return sorted(by_node.values())


async def test_a_remote_reader_follows_logs_on_every_node(cluster, on_cluster):
    message_ids = _message_ids_on_every_node(on_cluster)
    writer = async_client_for(cluster.url, 20)
    hub = EventLog(async_client_for(cluster.url, 50))
    offsets = dict.fromkeys(message_ids, 0)

    async def append(message_id: int, piece: str) -> None:
        offsets[message_id] += len(piece)
        event = events.delta(message_id, offsets[message_id], piece)
        await writer.xadd(events_key(message_id), {"e": orjson.dumps(event)}, id=event["cursor"])

    async def collect(message_id: int) -> str:
        return "".join([entry.text async for batch in hub.follow(message_id, (0, 0)) for entry in batch])

    try:
        for message_id in message_ids:
            await writer.delete(events_key(message_id))
            await append(message_id, "early ")
        readers = [asyncio.create_task(collect(message_id)) for message_id in message_ids]
        for index in range(10):
            await asyncio.sleep(0.02)
            for message_id in message_ids:
                await append(message_id, f"p{index} ")
        assert len(hub.remote.tasks) == 3  # one XREAD loop per stream tag in use, each on its node
        for message_id in message_ids:
            final = events.done(message_id, offsets[message_id], "complete")
            await writer.xadd(events_key(message_id), {"e": orjson.dumps(final)}, id=final["cursor"])
        texts = await asyncio.wait_for(asyncio.gather(*readers), 10)
        assert texts == ["early " + "".join(f"p{index} " for index in range(10))] * 3
        assert not hub.remote.subscribers
    finally:
        for message_id in message_ids:
            await writer.delete(events_key(message_id))
        await writer.aclose()
        await hub.redis.aclose()
        await hub.remote.reader.aclose()


async def test_notices_reach_users_whose_channels_hash_to_different_nodes(cluster, on_cluster):
    by_node: dict[str, int] = {}
    for user_id in range(1, 200):
        by_node.setdefault(on_cluster.get_node_from_key(user_channel(user_id)).name, user_id)
    assert len(by_node) == 3
    feeds = UserFeeds(async_client_for(cluster.url, 10))
    got: dict[int, list[bytes]] = {user_id: [] for user_id in by_node.values()}
    try:
        for user_id in got:
            await feeds.listen(user_id, got[user_id].append)
        for user_id in got:
            await asyncio.to_thread(publish_sync, user_id, {"type": "title", "user": user_id})
        for _ in range(100):
            if all(got.values()):
                break
            await asyncio.sleep(0.05)
        assert {user_id: [orjson.loads(payload)["user"] for payload in payloads] for user_id, payloads in got.items()} == {
            user_id: [user_id] for user_id in got
        }
    finally:
        if feeds.task is not None:
            feeds.task.cancel()
            await asyncio.gather(feeds.task, return_exceptions=True)
        await feeds.client.aclose()


def test_cluster_and_sentinel_urls_are_parsed():
    target = parse("redis+cluster://user:s%40cret@10.0.0.1:7000,10.0.0.2:7001")
    assert (target.kind, target.nodes, target.username, target.password, target.tls) == (
        "cluster", (("10.0.0.1", 7000), ("10.0.0.2", 7001)), "user", "s@cret", False)
    assert parse("rediss+cluster://h:7000").tls
    target = parse("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2")
    assert (target.kind, target.nodes, target.service, target.db, target.password) == (
        "sentinel", (("s1", 26379), ("s2", 26380)), "mymaster", 2, "pw")
    assert parse("redis://127.0.0.1:6379/0").kind == "single"
    for bad, reason in [
        ("redis+cluster://h:7000/0", "no path"),
        ("redis+cluster://h", "must be host:port"),
        ("redis+sentinel://h:26379", "service_name"),
        ("redis+sentinel://h:26379/mymaster/x", "must be a number"),
        ("redis+clusterr://h:7000", "must start with one of"),
    ]:
        with pytest.raises(RedisUrlError, match=reason):
            parse(bad)


def _settings_error(**env: str) -> str:
    environment = {key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "CELERY_BROKER_URL"}}
    environment.update(env, DJANGO_SETTINGS_MODULE="parley.settings")
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=environment,
                          capture_output=True, text=True, timeout=60)
    return done.stderr


def test_a_cluster_or_sentinel_needs_its_own_celery_broker():
    error = _settings_error(REDIS_URL="redis+cluster://127.0.0.1:7000")
    assert "REDIS_URL names a Redis cluster, which Celery cannot use as its broker: set CELERY_BROKER_URL" in error
    assert "Redis sentinel" in _settings_error(REDIS_URL="redis+sentinel://127.0.0.1:26379/parley")
    assert _settings_error(REDIS_URL="redis+cluster://127.0.0.1:7000", CELERY_BROKER_URL="redis://127.0.0.1:1/0") == ""
    assert "a cluster has only database 0" in _settings_error(REDIS_URL="redis+cluster://127.0.0.1:7000/1")


def _reason_before_django(url: str, **env: str) -> str:
    """What bin/parley run and the test runner say of `url` before Django starts (settings unread)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("REDIS_SENTINEL_")}
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    environment.update(env)
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from parley.embedded_redis import unreachable_reason; print(unreachable_reason(sys.argv[1]))", url],
        env=environment, capture_output=True, text=True, timeout=60,
    )
    return done.stdout.strip() + done.stderr


async def test_a_sentinel_that_asks_for_a_password_is_given_its_own(settings):
    """A Sentinel's password is not the primary's: REDIS_SENTINEL_PASSWORD, and a clear refusal without it."""
    primary = embedded_redis.start()
    sentinel = embedded_redis.start_sentinel(primary, service="parley-locked", password="s3ntinel-only")
    try:
        settings.REDIS_URL = sentinel.url
        settings.REDIS_SENTINEL_PASSWORD = ""
        asked = "The Sentinels ask for a password (Authentication required): set REDIS_SENTINEL_PASSWORD."
        assert embedded_redis.unreachable_reason(sentinel.url) == asked
        _, checks = await health.readiness()  # /readyz says the same
        assert checks["redis"] == {"ok": False, "ms": checks["redis"]["ms"], "error": asked}
        settings.REDIS_SENTINEL_PASSWORD = "wrong"
        assert "The Sentinels refused REDIS_SENTINEL_PASSWORD" in embedded_redis.unreachable_reason(sentinel.url)

        settings.REDIS_SENTINEL_PASSWORD = "s3ntinel-only"
        assert embedded_redis.unreachable_reason(sentinel.url) is None
        client = sync_client_for(sentinel.url, socket_timeout=5)
        client.set("parley-sentinel-locked", "1")
        assert sync_client_for(primary.url).get("parley-sentinel-locked") == b"1"  # the primary asks for nothing
        aclient = async_client_for(sentinel.url, 5)
        assert await aclient.get("parley-sentinel-locked") == b"1"
        await aclient.aclose()
        client.close()

        # Before Django starts, the same variable is read from the environment.
        assert _reason_before_django(sentinel.url, REDIS_SENTINEL_PASSWORD="s3ntinel-only") == "None"
        assert _reason_before_django(sentinel.url).startswith(asked)
    finally:
        sentinel.stop()
        primary.stop()


async def test_sentinel_finds_the_primary(settings):
    primary = embedded_redis.start()
    sentinel = embedded_redis.start_sentinel(primary, service="parley-test")
    try:
        settings.REDIS_URL = sentinel.url
        client = sync_client_for(sentinel.url, socket_timeout=5)
        client.set("parley-sentinel-check", "1")
        assert embedded_redis.unreachable_reason(sentinel.url) is None
        direct = sync_client_for(primary.url)
        assert direct.get("parley-sentinel-check") == b"1"  # it went to the primary the Sentinel names
        aclient = async_client_for(sentinel.url, 5)
        assert await aclient.get("parley-sentinel-check") == b"1"
        await aclient.aclose()
        bounded = bounded_async_client(4, 5.0)  # callers beyond its pool wait for a turn
        assert await asyncio.gather(*(bounded.get("parley-sentinel-check") for _ in range(100))) == [b"1"] * 100
        await bounded.aclose()
        client.close()
        direct.close()
    finally:
        sentinel.stop()
        primary.stop()
