"""Django's ASGI handler, with API requests sharing the database thread instead of one of their own.

Django runs each request's sync work (and so its database calls) in a thread made for that
request, which opens a database connection of its own and drops it at the end. The API's views
make a few short database hops, like the WebSocket consumer and the reply generations do; run
outside a per-request context, those hops go to the one shared database thread and its
persistent connection. Pages keep Django's default: their sync views may take longer (password
hashing, templates) and must not hold up the streams.
"""

from typing import Any

from django.core.handlers.asgi import ASGIHandler

# The JSON API and the protocol doors (gateway/: /v1/...).
API_PREFIXES = ("/api/", "/v1/")


class ParleyASGIHandler(ASGIHandler):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIXES):
            await self.handle(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)
