"""Sizing arithmetic: measured per-stream costs (bench/scale.py) -> what 10,000 and 100,000 concurrent
streams need: web processes (one core each), Redis operations a second and memory, database writes.

    .venv/bin/python -m bench.sizing --streams-per-core 150 --redis-ops-per-token 0.05 \\
        --redis-bytes-per-stream 9000 --redis-bytes-per-finished-reply 16000 --db-writes-per-reply 6
    .venv/bin/python -m bench.sizing --from var/scale.json      # the inputs a scale.py run measured

A concurrent stream is a reply being generated right now. The arithmetic assumes every stream
sends its replies back to back, as the benchmark does (so replies a second = streams x tokens a
second / tokens a reply): real users pause between replies, so this is the busy-hour bound, not
the average. Web processes are single-threaded Python (one event loop, one interpreter lock), so
a web process is counted as one core. Nothing here adds headroom: the lead sizes with the measured
figure, or with a lower one.

Redis memory has two parts. A running reply's event log grows with its text (measured mid-reply,
as scale.py samples it), and a finished reply's log stays for PARLEY_STREAM_TTL (an hour by
default) so that a client may re-attach: at a high reply rate the finished logs outweigh the
running ones.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STREAMS = (10_000, 100_000)


@dataclass(frozen=True, slots=True)
class Measured:
    """What a scale.py run measured (per web process where it says so)."""

    streams_per_core: float  # concurrent streams one web process carries within the latency targets
    redis_ops_per_token: float  # every Redis command (INFO commandstats) over the tokens delivered
    redis_bytes_per_stream: float  # MEMORY USAGE of a running reply's keys
    db_writes_per_reply: float  # rows inserted, updated and deleted per reply
    tokens_per_second: float = 50.0  # per stream
    tokens_per_reply: int = 200
    redis_bytes_per_finished_reply: float = 0.0  # a finished reply's log, kept for stream_ttl_seconds
    stream_ttl_seconds: float = 3600.0  # PARLEY_STREAM_TTL
    db_transactions_per_reply: float | None = None  # commits per reply (PostgreSQL only)
    redis_cpu_us_per_op: float | None = None  # Redis server CPU per command, when it ran on the machine

    def __post_init__(self) -> None:
        for name in ("streams_per_core", "tokens_per_second", "tokens_per_reply"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("redis_ops_per_token", "redis_bytes_per_stream", "db_writes_per_reply",
                     "redis_bytes_per_finished_reply", "stream_ttl_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class Sizing:
    streams: int
    web_processes: int  # = cores for the web tier
    tokens_per_second: float
    replies_per_second: float
    redis_ops_per_second: float
    redis_cores: float | None  # the Redis server's CPU for those operations, when measured
    redis_running_bytes: float
    redis_finished_bytes: float
    db_writes_per_second: float
    db_transactions_per_second: float | None

    @property
    def redis_bytes(self) -> float:
        return self.redis_running_bytes + self.redis_finished_bytes


def size(measured: Measured, streams: int) -> Sizing:
    """The resources `streams` concurrent streams need, at the measured cost of one."""
    if streams <= 0:
        raise ValueError(f"streams must be positive, got {streams!r}")
    tokens = streams * measured.tokens_per_second
    replies = tokens / measured.tokens_per_reply
    ops = tokens * measured.redis_ops_per_token
    return Sizing(
        streams=streams,
        web_processes=math.ceil(streams / measured.streams_per_core),
        tokens_per_second=tokens,
        replies_per_second=replies,
        redis_ops_per_second=ops,
        redis_cores=None if measured.redis_cpu_us_per_op is None else ops * measured.redis_cpu_us_per_op / 1e6,
        redis_running_bytes=streams * measured.redis_bytes_per_stream,
        # Finished logs alive at any moment: the replies finished within the last TTL.
        redis_finished_bytes=replies * measured.stream_ttl_seconds * measured.redis_bytes_per_finished_reply,
        db_writes_per_second=replies * measured.db_writes_per_reply,
        db_transactions_per_second=(None if measured.db_transactions_per_reply is None
                                    else replies * measured.db_transactions_per_reply),
    )


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def markdown(measured: Measured, streams: tuple[int, ...] = DEFAULT_STREAMS) -> str:
    rows = [size(measured, n) for n in streams]
    ttl_h = measured.stream_ttl_seconds / 3600
    out = [
        f"Inputs: {measured.streams_per_core:g} streams per web process (core), "
        f"{measured.redis_ops_per_token:g} Redis operations per token, {measured.redis_bytes_per_stream:,.0f} bytes "
        f"per running stream and {measured.redis_bytes_per_finished_reply:,.0f} per finished reply (kept "
        f"{ttl_h:g} h), {measured.db_writes_per_reply:g} row writes per reply; {measured.tokens_per_reply}-token "
        f"replies at {measured.tokens_per_second:g} tokens/s, back to back.",
        "",
        "| concurrent streams | web processes (cores) | tokens/s | replies/s | Redis ops/s | Redis CPU (cores) | "
        "Redis memory: running / finished logs / total | DB row writes/s | DB transactions/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in rows:
        cores = "–" if s.redis_cores is None else f"{s.redis_cores:,.2f}"
        xacts = "–" if s.db_transactions_per_second is None else f"{s.db_transactions_per_second:,.0f}"
        out.append(
            f"| {s.streams:,} | {s.web_processes:,} | {s.tokens_per_second:,.0f} | {s.replies_per_second:,.0f} | "
            f"{s.redis_ops_per_second:,.0f} | {cores} | {human_bytes(s.redis_running_bytes)} / "
            f"{human_bytes(s.redis_finished_bytes)} / {human_bytes(s.redis_bytes)} | {s.db_writes_per_second:,.0f} | {xacts} |"
        )
    return "\n".join(out)


def measured_from_json(path: Path, webs: int | None = None) -> Measured:
    """The `sizing_inputs` a scale.py run wrote with --out (for `webs` web processes, default the most)."""
    data = json.loads(path.read_text())
    inputs = data.get("sizing_inputs") or {}
    if not inputs:
        raise ValueError(f"{path} has no sizing_inputs: run bench/scale.py with --out, and --find-max or phases that met the targets")
    key = str(webs) if webs is not None else max(inputs, key=int)
    if key not in inputs:
        raise ValueError(f"{path} has sizing inputs for {sorted(inputs)} web processes, not {key}")
    return Measured(**inputs[key])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", default="", help="a scale.py --out JSON file: its measured inputs")
    parser.add_argument("--webs", type=int, default=None, help="with --from: the inputs of this many web processes")
    parser.add_argument("--streams-per-core", type=float)
    parser.add_argument("--redis-ops-per-token", type=float)
    parser.add_argument("--redis-bytes-per-stream", type=float)
    parser.add_argument("--db-writes-per-reply", type=float)
    parser.add_argument("--redis-bytes-per-finished-reply", type=float, default=0.0)
    parser.add_argument("--db-transactions-per-reply", type=float, default=None)
    parser.add_argument("--redis-cpu-us-per-op", type=float, default=None)
    parser.add_argument("--tokens-per-second", type=float, default=50.0, help="per stream")
    parser.add_argument("--tokens-per-reply", type=int, default=200)
    parser.add_argument("--stream-ttl", type=float, default=3600.0, help="PARLEY_STREAM_TTL in seconds")
    parser.add_argument("--streams", default=",".join(str(n) for n in DEFAULT_STREAMS), help="comma-separated")
    args = parser.parse_args(argv)
    required = ("streams_per_core", "redis_ops_per_token", "redis_bytes_per_stream", "db_writes_per_reply")
    if not args.source and any(getattr(args, name) is None for name in required):
        parser.error("give --from FILE, or all of --streams-per-core, --redis-ops-per-token, --redis-bytes-per-stream "
                     "and --db-writes-per-reply")
    try:
        args.streams = tuple(int(n) for n in args.streams.split(",") if n)
    except ValueError:
        parser.error(f"--streams takes comma-separated whole numbers, got {args.streams!r}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.source:
        measured = measured_from_json(Path(args.source), args.webs)
    else:
        measured = Measured(
            streams_per_core=args.streams_per_core, redis_ops_per_token=args.redis_ops_per_token,
            redis_bytes_per_stream=args.redis_bytes_per_stream, db_writes_per_reply=args.db_writes_per_reply,
            tokens_per_second=args.tokens_per_second, tokens_per_reply=args.tokens_per_reply,
            redis_bytes_per_finished_reply=args.redis_bytes_per_finished_reply, stream_ttl_seconds=args.stream_ttl,
            db_transactions_per_reply=args.db_transactions_per_reply, redis_cpu_us_per_op=args.redis_cpu_us_per_op,
        )
    print(markdown(measured, args.streams))


if __name__ == "__main__":
    main()
