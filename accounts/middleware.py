"""Bearer-token authentication for scripted clients, over HTTP and WebSocket."""

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse

from accounts.models import ApiToken


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
    """Authenticates `Authorization: Bearer` requests; they skip CSRF since no cookie is involved."""

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
        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is not None:
            self._authenticate(request, ApiToken.user_for(raw))
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is not None:
            self._authenticate(request, await sync_to_async(ApiToken.user_for)(raw))
        return await self.get_response(request)

    @staticmethod
    def _authenticate(request: HttpRequest, user: Any) -> None:
        resolved = user if user is not None else AnonymousUser()

        async def auser() -> Any:
            return resolved

        request.user = resolved
        request.auser = auser  # type: ignore[attr-defined]
        request.bearer_auth = True  # type: ignore[attr-defined]
        request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]


class WebSocketBearerMiddleware(BaseMiddleware):
    """Puts the token's user in the scope when a WebSocket handshake carries a bearer token."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        raw = bearer_from_header(headers.get(b"authorization"))
        if raw is not None:
            user = await database_sync_to_async(ApiToken.user_for)(raw)
            scope = dict(scope, user=user or AnonymousUser(), bearer_auth=True)
        return await super().__call__(scope, receive, send)
