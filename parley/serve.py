"""`python -m parley.serve [daphne options] parley.asgi:application`: daphne on uvloop's event loop.

Daphne creates its event loop when `daphne.server` is imported (it installs Twisted's asyncio
reactor on it), so the uvloop policy has to be set before that import; this launcher does that and
then runs daphne's command line, whose server answers requests over its size limits rather than
dropping them (parley/transport.py). Without uvloop installed it runs on asyncio's own loop.
Measured with bench/load.py: see docs/benchmarks.md.

Responses carry no `Server` header (daphne's default names itself, on HTTP responses and WebSocket
handshakes alike); `--server-name NAME` on the command line still sets one.
"""

import asyncio
import logging
import sys

logger = logging.getLogger("parley.serve")
# Time for the running replies' final writes at shutdown (a database write and a Redis flush each).
SHUTDOWN_GRACE_SECONDS = 5.0


def main() -> None:
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # Imports daphne.server, which creates the event loop and installs Twisted's asyncio reactor:
    # only now, with the policy set, and before anything imports `twisted.internet.reactor`
    # (that would install Twisted's default reactor, and the trigger below would never run).
    from parley.transport import CommandLineInterface  # noqa: I001
    from twisted.internet import reactor

    reactor.addSystemEventTrigger("before", "shutdown", _interrupt_running_replies)
    # First, so that a --server-name given on the command line, parsed later, wins.
    CommandLineInterface().run(["--no-server-name", *sys.argv[1:]])


def _interrupt_running_replies() -> object:
    """On SIGTERM or SIGINT, end this process's replies as `interrupted` before the loop stops
    (Twisted waits for the returned Deferred), rather than leave them to the reaper."""
    from twisted.internet.defer import Deferred

    async def interrupt() -> None:
        from streaming import process

        here = process.running()
        if here is not None:
            count = await here.slots.interrupt_all(SHUTDOWN_GRACE_SECONDS)
            await here.event_log.flush_before_exit()
            if count:
                logger.warning("Stopping: %d running replies ended as interrupted", count)

    return Deferred.fromFuture(asyncio.ensure_future(interrupt()))


if __name__ == "__main__":
    main()
