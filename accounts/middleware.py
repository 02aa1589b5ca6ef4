"""Bearer-token authentication for scripted clients, over HTTP and WebSocket, with the token's scopes."""

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse

from accounts import token_sockets
from accounts.models import ApiToken

# The protocol doors (gateway/) read their own credentials (`Authorization: Bearer` or `x-api-key`)
# and answer a bad one in their protocol's own error shape; this middleware leaves them alone.
PROTOCOL_PREFIXES = ("/v1/", "/api/ai-sdk/", "/api/ag-ui/")


def bearer_from_header(value: str | bytes | None) -> str | None:
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


class BearerTokenMiddleware:
    """Authenticates `Authorization: Bearer` requests; they skip CSRF since no cookie is involved.
    A token without the scope the request needs gets 403 `insufficient_scope`."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[..., Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        raw = _credentials(request)
        if raw is not None:
            refused = self._authenticate(request, ApiToken.find(raw))
            if refused is not None:
                return refused
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        raw = _credentials(request)
        if raw is not None:
            refused = self._authenticate(request, await sync_to_async(ApiToken.find)(raw))
            if refused is not None:
                return refused
        return await self.get_response(request)

    @staticmethod
    def _authenticate(request: HttpRequest, token: ApiToken | None) -> HttpResponse | None:
        if token is not None and not token.allows_request(request.method or "GET"):
            from chat.responses import json_error  # the JSON error shape lives with the HTTP doors

            return json_error("insufficient_scope")
        resolved = token.user if token is not None else AnonymousUser()

        async def auser() -> Any:
            return resolved

        request.user = resolved
        request.auser = auser  # type: ignore[attr-defined]
        request.api_token = token  # type: ignore[attr-defined]
        request.bearer_auth = True  # type: ignore[attr-defined]
        request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
        return None


def _credentials(request: HttpRequest) -> str | None:
    if request.path.startswith(PROTOCOL_PREFIXES):
        return None
    return bearer_from_header(request.headers.get("Authorization"))


class WebSocketBearerMiddleware(BaseMiddleware):
    """Puts the token's user in the scope when a WebSocket handshake carries a bearer token with
    the chat scope (the socket sends as well as reads, so a read-only token does not open it), and
    has the socket closed once the token stops being valid (accounts/token_sockets.py)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        raw = bearer_from_header(headers.get(b"authorization"))
        if raw is None:
            return await super().__call__(scope, receive, send)
        token = await database_sync_to_async(ApiToken.find)(raw)
        if token is None or not token.allows(ApiToken.Scope.CHAT):
            return await super().__call__(dict(scope, user=AnonymousUser(), bearer_auth=True), receive, send)
        # Open while the token lives: closed once it is revoked or expires, from whichever process.
        sockets, socket = token_sockets.watched(), id(scope)

        async def close() -> None:
            await send({"type": "websocket.close", "code": token_sockets.CLOSE_REVOKED})

        sockets.add(token.pk, socket, close)
        try:
            return await super().__call__(dict(scope, user=token.user, bearer_auth=True), receive, send)
        finally:
            sockets.discard(token.pk, socket)
