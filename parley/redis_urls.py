"""What REDIS_URL names: one Redis, a Redis (or Valkey) Cluster, or a primary found through Sentinel.

    redis://[user:password@]host:port/db          one server (also rediss://, unix://)
    redis+cluster://[user:password@]host:port[,host:port...]     a cluster, by some of its nodes
    rediss+cluster://...                          the same over TLS
    redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]   Sentinel; the password,
                                                  if any, is the primary's (rediss+sentinel: TLS to the primary;
                                                  the Sentinels' own: REDIS_SENTINEL_* settings)

A cluster has no databases, so a cluster URL has no path. Parsing is kept free of Django so that
settings and the test runner share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

Kind = Literal["single", "cluster", "sentinel"]
SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
ALL_SCHEMES = SINGLE_SCHEMES + CLUSTER_SCHEMES + SENTINEL_SCHEMES


class RedisUrlError(ValueError):
    pass


@dataclass(frozen=True)
class RedisTarget:
    kind: Kind
    url: str  # for "single", the URL itself
    nodes: tuple[tuple[str, int], ...] = ()  # cluster start-up nodes, or the sentinels
    service: str = ""  # the Sentinel service (master) name
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def _nodes(netloc: str, url: str) -> tuple[tuple[str, int], ...]:
    found = []
    for part in filter(None, (item.strip() for item in netloc.split(","))):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisUrlError(f"{url!r}: {part!r} must be host:port")
        found.append((host.strip("[]"), int(port)))
    if not found:
        raise RedisUrlError(f"{url!r} names no host:port")
    return tuple(found)


def parse(url: str) -> RedisTarget:
    """Raises RedisUrlError, naming what is wrong, for a URL no client could use."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ALL_SCHEMES:
        allowed = ", ".join(f"{name}://" for name in ALL_SCHEMES)
        raise RedisUrlError(f"{url!r} must start with one of: {allowed}")
    if scheme in SINGLE_SCHEMES:
        return RedisTarget("single", url)
    # urlsplit cannot take several host:port pairs, so the credentials and the path are cut by hand.
    location, _, path = rest.partition("/")
    credentials, at, hosts = location.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if colon else None)
    if urlsplit(f"//x/{path}").query:
        raise RedisUrlError(f"{url!r}: options after '?' are not read; leave them out")
    tls = scheme.startswith("rediss")
    nodes = _nodes(hosts, url)
    segments = [segment for segment in path.split("/") if segment]
    if scheme in CLUSTER_SCHEMES:
        if segments:
            raise RedisUrlError(f"{url!r}: a cluster has only database 0, so its URL has no path")
        return RedisTarget("cluster", url, nodes, username=username, password=password, tls=tls)
    if not segments or len(segments) > 2:
        raise RedisUrlError(f"{url!r}: a Sentinel URL ends in /service_name or /service_name/db")
    if len(segments) == 2 and not segments[1].isdigit():
        raise RedisUrlError(f"{url!r}: the database after the service name must be a number")
    db = int(segments[1]) if len(segments) == 2 else 0
    return RedisTarget("sentinel", url, nodes, unquote(segments[0]), db, username, password, tls)
