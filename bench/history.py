"""How a conversation of 10,000 messages opens, and what opening it costs everyone else.

    .venv/bin/python -m bench.history --messages 10000 --tries 30 --seconds 20

1. A fresh SQLite database in a temp dir (migrations; one user with an API token and a sign-in
   cookie; one conversation of --messages messages, alternating user questions of about 190
   characters and markdown replies of about 550, each the parent of the next, with an edit near
   the end on a branch not shown, so the long branch is read along its parents (chat/branches.py);
   a short conversation and 200 finished replies for the probes).
2. One daphne (`python -m parley.serve`, uvloop) serving it; Redis from REDIS_URL, or an embedded
   one when unset (keys under a unique prefix, removed at the end).
3. **Open**: GET the long conversation's API detail and its chat page, one at a time, --tries
   times each: wall time p50 / p99 and the response's size. Where the server pages (the response
   has `older`), also a page near its start (before its 60th message) from the API and from the
   chat page's "Load earlier messages" partial.
4. **Stall**: two probes, each paced every --probe-ms, open loop (each starts on time whether or
   not the one before has ended), for --seconds alone (idle), then for --seconds while --clients
   clients GET the long conversation's API detail and chat page (--hammer) back to back (loaded). The probes are what a streaming user waits on:
   - `api`: GET the short conversation's API detail. API views run on the one database thread
     that every stream's database hop shares (parley/handler.py), so this is a database hop too;
   - `ws attach`: an `attach` frame for a finished reply on an open WebSocket, to its `done`:
     the consumer's database hop (`database_sync_to_async`) and the stored text sent back.
   The added latency is loaded minus idle, per percentile.

The driver (one asyncio process, aiohttp) shares the machine's cores with daphne and Redis; the
load average before and after is printed, since other work on the machine shows up there.
Works against any Parley version with the same URLs, so the same file can measure older code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.load import ROOT, Child, fmt, free_port, machine_facts, pct

QUESTION = "How would you {verb} a {thing} for a team of {n} people, and what would you watch out for first? " * 2
REPLY = (
    "Here is how I would go about it, step by step.\n\n"
    "## Plan for {n}\n\n"
    "1. **Start small**: {verb} one {thing} first and measure it.\n"
    "2. *Then* grow it: every step should be reversible, and written down.\n"
    "3. Keep a list of what broke, with [links](https://example.com/{n}) to each fix.\n\n"
    "```python\n"
    "def plan(size: int) -> list[str]:\n"
    "    return [f'step {{index}}' for index in range(size)]\n"
    "```\n\n"
    "> The hardest part is rarely the {thing} itself; it is agreeing on what done means.\n\n"
    "In short: {verb} the {thing}, watch it for a week, then decide. Message {n} of this conversation."
)
PROBE_REPLIES = 200
REPLIES_PER_SOCKET = 25  # under the 32 attachments a socket may hold (chat/consumers.py)
VERBS = ("plan", "build", "test", "ship", "review")
THINGS = ("release", "database", "dashboard", "backup", "migration")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--tries", type=int, default=30, help="timed requests of each kind in the open phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the idle and of the loaded stall phase")
    parser.add_argument("--clients", type=int, default=2, help="clients opening the long conversation in the loaded phase")
    parser.add_argument("--hammer", default="api,page", help="what the loaded phase's clients open: api, page or both")
    parser.add_argument("--probe-ms", type=float, default=50.0, help="interval between probes of each kind")
    parser.add_argument("--server", default=f"{sys.executable} -m parley.serve", help="the command that starts the server")
    parser.add_argument("--out", help="write every number as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, server log)")
    args = parser.parse_args()

    machine = machine_facts()  # its load average, before anything here runs
    temp = Path(tempfile.mkdtemp(prefix="parley-bench-history-"))
    env = {
        "DJANGO_SETTINGS_MODULE": "parley.settings",
        "DATABASE_URL": f"sqlite:///{temp / 'bench.sqlite3'}",
        "PARLEY_KEY_PREFIX": f"parley-bench-{uuid.uuid4().hex[:8]}",
        "PARLEY_VAR_DIR": str(temp),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    env["PARLEY_CELERY_QUEUE"] = env["PARLEY_KEY_PREFIX"]
    os.environ.update(env)
    embedded = None
    if not os.environ.get("REDIS_URL"):
        from parley import embedded_redis

        embedded = embedded_redis.start()
        os.environ["REDIS_URL"] = embedded.url
    server: Child | None = None
    try:
        fixture = build_database(args.messages)
        port = free_port()
        server = Child("daphne", [*args.server.split(), "-b", "127.0.0.1", "-p", str(port), "parley.asgi:application"],
                       dict(os.environ), temp / "daphne.log").start()
        server.wait_for_port(port)
        results = asyncio.run(measure(args, f"http://127.0.0.1:{port}", fixture))
        results["machine"] = machine | {"load_average_after": os.getloadavg()}
        results["settings"] = {key: getattr(args, key) for key in ("messages", "tries", "seconds", "clients", "hammer", "probe_ms", "server")}
        report(results)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2))
    finally:
        if server is not None:
            server.stop()
        remove_keys()
        if embedded is not None:
            embedded.stop()
        if args.keep:
            print(f"kept {temp}", file=sys.stderr)
        else:
            shutil.rmtree(temp, ignore_errors=True)


def build_database(count: int) -> dict[str, Any]:
    """Migrations, the user, the long and the short conversation; what the driver needs to know."""
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
    import django

    django.setup()
    from django.conf import settings
    from django.test import Client

    from accounts.models import ApiToken, User
    from chat.models import ChatModel, Conversation, Message

    user = User.objects.create_user("history")
    _, token = ApiToken.issue(user, "bench")
    model = ChatModel.objects.get(name="parley-demo")
    long = Conversation.objects.create(owner=user, model=model, title="A long one")
    Message.objects.bulk_create((_message(long, index) for index in range(count)), batch_size=1000)
    _branch(long)
    short = Conversation.objects.create(owner=user, model=model, title="A short one")
    Message.objects.create(conversation=short, role="user", content="Hello?")
    Message.objects.create(conversation=short, role="assistant", content="Hello! " * 20, status="complete")
    # Finished replies for the attach probe, more than can be in flight: one attach per reply at a time.
    finished = Conversation.objects.create(owner=user, model=model, title="Probe replies")
    replies = Message.objects.bulk_create(
        Message(conversation=finished, role="assistant", content="Hello! " * 20, status="complete") for _ in range(PROBE_REPLIES)
    )
    client = Client()
    client.force_login(user)
    ids = list(long.messages.order_by("id").values_list("id", flat=True)[:60])
    return {
        "token": token, "cookies": {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}, "long": long.pk,
        "short": short.pk, "replies": [reply.pk for reply in replies], "an_early_id": ids[-1], "messages": count,
    }


def _branch(conversation: Any) -> None:
    """Makes the long conversation a tree that shows its long branch: each message's parent is the
    one before it, and a question near its end has an edit on a branch of its own. On a Parley
    without branches its messages stay in id order."""
    try:
        from chat import branches
    except ImportError:
        return
    from chat.models import Message

    branches.make_branched(conversation)
    newest = list(conversation.messages.order_by("-id")[:12])
    question = next(message for message in newest[2:] if message.role == "user")
    edit = Message.objects.create(conversation=conversation, parent_id=question.parent_id, role="user", content="An edited question")
    Message.objects.create(conversation=conversation, parent=edit, role="assistant", content="Another answer", status="complete")
    branches.set_leaf(conversation, newest[0].pk)


def _message(conversation: Any, index: int) -> Any:
    from chat.models import Message

    words = {"verb": VERBS[index % 5], "thing": THINGS[index // 5 % 5], "n": index}
    if index % 2 == 0:
        return Message(conversation=conversation, role="user", content=QUESTION.format(**words))
    return Message(conversation=conversation, role="assistant", content=REPLY.format(**words), status="complete")


async def measure(args: argparse.Namespace, base: str, fixture: dict[str, Any]) -> dict[str, Any]:
    bearer = {"Authorization": f"Bearer {fixture['token']}"}
    api_url = f"{base}/api/conversations/{fixture['long']}/"
    page_url = f"{base}/c/{fixture['long']}/"
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(headers=bearer, timeout=timeout) as api, \
            aiohttp.ClientSession(cookies=fixture["cookies"], timeout=timeout) as browser:
        first = await fetch(api, api_url)
        assert first[0] == 200, first
        paged = "older" in json.loads(first[2])
        opens = {"api detail": (api, api_url), "chat page": (browser, page_url)}
        if paged:
            opens["api early page"] = (api, f"{api_url}?before={fixture['an_early_id']}")
            opens["earlier partial"] = (browser, f"{page_url}earlier/?before={fixture['an_early_id']}")
        results: dict[str, Any] = {"paged": paged, "open": {}, "stall": {}}
        for name, (session, url) in opens.items():
            await fetch(session, url)  # warm
            times, size = [], 0
            for _ in range(args.tries):
                status, took, body = await fetch(session, url)
                assert status == 200, (url, status)
                times.append(took)
                size = len(body)
            results["open"][name] = summarize(times) | {"bytes": size}
            print(f"open {name}: {summary_text(results['open'][name])}, {size:,} bytes", file=sys.stderr)

        results["stall"]["idle"] = await probe_phase(args, base, fixture, bearer, hammer=None)
        print(f"idle: {results['stall']['idle']['probes']}", file=sys.stderr)
        targets = {"api": (api, api_url), "page": (browser, page_url)}
        hammered = [targets[name] for name in args.hammer.split(",")]
        results["stall"]["loaded"] = await probe_phase(args, base, fixture, bearer, hammer=hammered)
        print(f"loaded: {results['stall']['loaded']['probes']}", file=sys.stderr)
    return results


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, float, bytes]:
    started = time.perf_counter()
    async with session.get(url) as response:
        body = await response.read()
    return response.status, (time.perf_counter() - started) * 1000, body


async def probe_phase(
    args: argparse.Namespace, base: str, fixture: dict[str, Any], bearer: dict[str, str],
    hammer: list[tuple[aiohttp.ClientSession, str]] | None,
) -> dict[str, Any]:
    stop = asyncio.Event()
    done_requests: list[float] = []

    async def hammer_client(offset: int) -> None:
        assert hammer is not None
        turn = offset
        while not stop.is_set():
            session, url = hammer[turn % len(hammer)]
            status, took, _ = await fetch(session, url)
            assert status == 200, (url, status)
            done_requests.append(took)
            turn += 1

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(headers=bearer, timeout=timeout) as probes:
        attach = Attacher()
        replies = fixture["replies"]
        for start in range(0, len(replies), REPLIES_PER_SOCKET):
            await attach.open(probes, f"{base.replace('http', 'ws', 1)}/ws/chat/", replies[start:start + REPLIES_PER_SOCKET])
        await attach.once()  # warm
        await fetch(probes, f"{base}/api/conversations/{fixture['short']}/")
        hammers = [asyncio.create_task(hammer_client(index)) for index in range(args.clients)] if hammer else []
        if hammers:
            await asyncio.sleep(1.0)  # every hammer client has a request in flight
        api_times: list[float] = []
        ws_times: list[float] = []

        samples: dict[str, list[tuple[float, float]]] = {"api": [], "ws attach": []}  # (started at s, took ms)

        async def api_probe(at: float) -> None:
            status, took, _ = await fetch(probes, f"{base}/api/conversations/{fixture['short']}/")
            assert status == 200, status
            api_times.append(took)
            samples["api"].append((at, took))

        async def ws_probe(at: float) -> None:
            took = await attach.once()
            ws_times.append(took)
            samples["ws attach"].append((at, took))

        pending = []
        interval = args.probe_ms / 1000
        start = time.perf_counter()
        for index in range(int(args.seconds / interval)):
            delay = start + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            at = round(index * interval, 3)
            pending += [asyncio.create_task(api_probe(at)), asyncio.create_task(ws_probe(at))]
        await asyncio.gather(*pending)
        stop.set()
        await asyncio.gather(*hammers)
        await attach.close()
    result = {"probes": {"api": summarize(api_times), "ws attach": summarize(ws_times)}, "samples": samples}
    if hammer:
        result["hammer"] = summarize(done_requests)
    return result


class Attacher:
    """`attach` frames for finished replies over a few sockets, each timed to its `done`. A reply is
    attached by one frame at a time: a second attach to it on a socket would replace the first."""

    def __init__(self) -> None:
        self.free: asyncio.Queue[tuple[aiohttp.ClientWebSocketResponse, int]] = asyncio.Queue()
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.readers: list[asyncio.Task[None]] = []

    async def open(self, session: aiohttp.ClientSession, url: str, message_ids: list[int]) -> None:
        ws = await session.ws_connect(url)
        self.sockets.append(ws)
        self.readers.append(asyncio.create_task(self.read(ws)))
        for message_id in message_ids:
            self.free.put_nowait((ws, message_id))

    async def once(self) -> float:
        """From the probe's start (a wait for a free reply included) to its `done`, in ms."""
        started = time.perf_counter()
        ws, message_id = await self.free.get()
        done = self.waiting[message_id] = asyncio.get_running_loop().create_future()
        await ws.send_str(json.dumps({"type": "attach", "message": message_id, "after": ""}))
        await done
        self.free.put_nowait((ws, message_id))
        return (time.perf_counter() - started) * 1000

    async def read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            event = json.loads(frame.data)
            if event.get("type") == "done":
                self.waiting.pop(event["message"]).set_result(None)
            elif event.get("type") == "error":
                raise RuntimeError(f"attach refused: {event}")

    async def close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        for ws in self.sockets:
            await ws.close()


def summarize(times: list[float]) -> dict[str, Any]:
    return {"n": len(times), "p50_ms": pct(times, 50), "p99_ms": pct(times, 99), "max_ms": max(times) if times else None}


def summary_text(summary: dict[str, Any]) -> str:
    return f"p50 {fmt(summary['p50_ms'])} / p99 {fmt(summary['p99_ms'])} ms (n={summary['n']})"


def report(results: dict[str, Any]) -> None:
    machine = results["machine"]
    print(f"\n{results['settings']['messages']:,} messages; {machine['nproc']} cores; load average "
          f"{' '.join(f'{x:.2f}' for x in machine['load_average_before'])} before, "
          f"{' '.join(f'{x:.2f}' for x in machine['load_average_after'])} after")
    print("\n| opening the long conversation | p50 (ms) | p99 (ms) | response |")
    print("|---|---|---|---|")
    for name, summary in results["open"].items():
        print(f"| {name} | {fmt(summary['p50_ms'])} | {fmt(summary['p99_ms'])} | {summary['bytes'] / 1024:,.0f} KiB |")
    idle, loaded = results["stall"]["idle"], results["stall"]["loaded"]
    hammer = loaded["hammer"]
    print(f"\n{results['settings']['clients']} clients opening it back to back: {hammer['n']} requests in "
          f"{results['settings']['seconds']:g} s, p50 {fmt(hammer['p50_ms'])} / p99 {fmt(hammer['p99_ms'])} ms")
    print("\n| probe | idle p50 / p99 (ms) | loaded p50 / p99 / max (ms) | added p50 / p99 (ms) |")
    print("|---|---|---|---|")
    for name in ("api", "ws attach"):
        quiet, busy = idle["probes"][name], loaded["probes"][name]
        print(f"| {name} | {fmt(quiet['p50_ms'])} / {fmt(quiet['p99_ms'])} | {fmt(busy['p50_ms'])} / {fmt(busy['p99_ms'])} / "
              f"{fmt(busy['max_ms'])} | {fmt(busy['p50_ms'] - quiet['p50_ms'])} / {fmt(busy['p99_ms'] - quiet['p99_ms'])} |")


def remove_keys() -> None:
    try:
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        keys = list(client.scan_iter(f"{os.environ['PARLEY_KEY_PREFIX']}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception as error:  # noqa: BLE001 - the numbers are printed; a leftover key is not worth a traceback
        print(f"cleanup: {error}", file=sys.stderr)


if __name__ == "__main__":
    main()
