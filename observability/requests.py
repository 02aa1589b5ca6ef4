"""Every HTTP request and WebSocket connection: its request id, and its span when traces are on.

`Observed` wraps the ASGI application: it takes a well-formed incoming `X-Request-ID` or makes one,
binds it for everything the request starts (observability/context.py), sends it back on the
response (and on the WebSocket handshake's accept), and, with traces on, opens a server span that
continues an incoming W3C `traceparent`. `RouteMiddleware`, in Django's stack, names the span after
the URL pattern (`http.route`) and notes the user once authentication has said who it is.

A WebSocket's span covers its handshake only (until accepted or refused): a socket stays open for
hours: each frame it sends starts a trace of its own, linked to the handshake's (chat/consumers.py).
"""

from typing import Any

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from observability import context, tracing

HEADER_BYTES = context.HEADER.lower().encode()
# Probes and scrapes come every few seconds and say nothing of a user's request: no span each.
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


class Observed:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == HEADER_BYTES:
                incoming = value
                break
        rid = context.accept(incoming)
        context.bind(rid)
        echoed = (HEADER_BYTES, rid.encode())
        if not tracing.enabled() or scope.get("path") in UNTRACED:
            async def send_with_id(message: dict[str, Any]) -> None:
                if message["type"] in ("http.response.start", "websocket.accept"):
                    message["headers"] = [*message.get("headers", ()), echoed]
                await send(message)

            return await self.app(scope, receive, send_with_id)
        await self._traced(scope, receive, send, echoed)

    async def _traced(self, scope: dict[str, Any], receive: Any, send: Any, echoed: tuple[bytes, bytes]) -> None:
        http = scope["type"] == "http"
        method = scope.get("method", "GET") if http else "GET"
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())
                   if name in (b"traceparent", b"tracestate")}
        parent = propagate.extract(carrier) if carrier else None
        attributes = {
            "http.request.method": method, "url.path": scope.get("path", ""), "url.scheme": scope.get("scheme", "http"),
            "parley.request_id": echoed[1].decode(),
        }
        name = method if http else "WebSocket"
        current = tracing.start(name, attributes, SpanKind.SERVER, parent=parent)
        handshake_open = not http
        token = otel_context.attach(trace.set_span_in_context(current, parent))

        async def send_traced(message: dict[str, Any]) -> None:
            nonlocal handshake_open
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept"):
                message["headers"] = [*message.get("headers", ()), echoed]
            if kind == "http.response.start":
                status = int(message["status"])
                current.set_attribute("http.response.status_code", status)
                if status >= 500:
                    tracing.fail(current, str(status))
            elif handshake_open and kind in ("websocket.accept", "websocket.close"):
                handshake_open = False
                current.set_attribute("parley.websocket.accepted", kind == "websocket.accept")
                current.end()
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except BaseException as error:
            if http or handshake_open:  # an ended span takes no more attributes
                tracing.fail(current, type(error).__qualname__)
            raise
        finally:
            if http or handshake_open:
                current.end()
            otel_context.detach(token)


class RouteMiddleware:
    """Last in Django's stack: the request span named after its URL pattern, and the user noted
    once authentication has resolved it (a session's user is only loaded when something asks)."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)  # so that Django keeps the whole stack async

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        return await self.get_response(request)

    async def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: Any) -> None:
        # A coroutine: Django awaits it as it is, where a plain method would cost a thread hop.
        user = request.__dict__.get("user")
        loaded = getattr(user, "_wrapped", user)  # a lazy user not yet loaded holds a sentinel
        if getattr(loaded, "is_authenticated", False):
            context.set_user(loaded.pk)
        if tracing.enabled():
            current = trace.get_current_span()
            match = request.resolver_match
            if current.is_recording() and match is not None and match.route:
                route = "/" + match.route.lstrip("^")
                current.set_attribute("http.route", route)
                current.update_name(f"{request.method} {route}")
