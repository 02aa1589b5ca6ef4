"""Open WebSockets made with an API token close (code 4401) once the token is revoked, expires,
is deleted or its user deactivated, whichever web process the change was made in.

Each web process asks the database about the tokens of its open token sockets twice a second, in
one query whatever their number, and only while it has any: revocation needs no message between
processes, and a process that missed none can be trusted since the database is the truth."""

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiToken

logger = logging.getLogger(__name__)

CHECK_SECONDS = 0.5
CLOSE_REVOKED = 4401  # the code a socket without valid credentials is closed with (chat/consumers.py)
Close = Callable[[], Awaitable[None]]


def dead_tokens(ids: set[int]) -> set[int]:
    """Those of `ids` that no longer open anything."""
    now = timezone.now()
    live = ApiToken.objects.filter(
        Q(expires__isnull=True) | Q(expires__gt=now), pk__in=ids, revoked__isnull=True, user__is_active=True,
    ).values_list("pk", flat=True)
    return ids - set(live)


class TokenSockets:
    """The open sockets of this process, by token, each with how to close it."""

    def __init__(self) -> None:
        self.sockets: dict[int, dict[int, Close]] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, token_id: int, socket: int, close: Close) -> None:
        self.sockets.setdefault(token_id, {})[socket] = close
        # A watch of another event loop (a test's, since closed) will never run again here.
        if self.task is None or self.task.done() or self.task.get_loop() is not asyncio.get_running_loop():
            self.task = asyncio.create_task(self._watch(), name="parley-token-sockets", context=contextvars.Context())

    def discard(self, token_id: int, socket: int) -> None:
        sockets = self.sockets.get(token_id)
        if sockets is not None:
            sockets.pop(socket, None)
            if not sockets:
                del self.sockets[token_id]

    async def _watch(self) -> None:
        while self.sockets:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                dead = await database_sync_to_async(dead_tokens)(set(self.sockets))
            except Exception:  # a database hiccup must not end the watch for every socket
                logger.exception("Could not check the tokens of open sockets")
                continue
            for token_id in dead:
                for close in list(self.sockets.pop(token_id, {}).values()):
                    try:
                        await close()
                    except Exception:  # a socket gone meanwhile must not keep the others open
                        logger.exception("Could not close a socket of a token no longer valid")


_watched: TokenSockets | None = None


def watched() -> TokenSockets:
    global _watched
    if _watched is None:
        _watched = TokenSockets()
    return _watched
