"""Django's stock middleware, minus a thread round trip per hook.

Under ASGI, Django runs every hook of a `MiddlewareMixin` middleware (process_request,
process_view, process_response) through `sync_to_async`: with the stock stack that is about a
dozen thread round trips per request, which cost more CPU on the event loop than a send's own
work (docs/benchmarks.md). These hooks only read and write headers, cookies and request
attributes, so here they run inline. The two that can reach the database, saving a changed
session and storing messages that spill over into it, still go to a thread when they will.
"""

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponse
from django.middleware import clickjacking, common, csp, csrf, security
from django.utils.decorators import async_only_middleware

from observability import metrics


class InlineHooks:
    """For a MiddlewareMixin subclass whose request and response hooks never touch the database."""

    get_response: Any
    async_mode: bool

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)  # type: ignore[call-arg]
        view_hook = getattr(self, "process_view", None)
        if self.async_mode and view_hook is not None:
            # Django awaits a coroutine process_view as is; a plain one gets a thread round trip.
            async def process_view(request: HttpRequest, callback: Any, args: Any, kwargs: Any) -> HttpResponse | None:
                return view_hook(request, callback, args, kwargs)

            self.process_view = process_view

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)
        if self.response_needs_thread(request):
            return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
        return self.process_response(request, response) if hasattr(self, "process_response") else response

    def response_needs_thread(self, request: HttpRequest) -> bool:
        return False


class SecurityMiddleware(InlineHooks, security.SecurityMiddleware):
    """Also sends Permissions-Policy, which Django has no setting for."""

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        self.permissions_policy = ", ".join(
            f"{feature}=({' '.join(allowed)})" for feature, allowed in settings.PARLEY_PERMISSIONS_POLICY.items()
        )

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response = super().process_response(request, response)
        if self.permissions_policy:
            response.headers.setdefault("Permissions-Policy", self.permissions_policy)
        return response


class CommonMiddleware(InlineHooks, common.CommonMiddleware):
    pass


class CsrfViewMiddleware(InlineHooks, csrf.CsrfViewMiddleware):
    """Tokens live in a cookie (CSRF_USE_SESSIONS is off), so checking one is pure CPU."""


class SessionMiddleware(InlineHooks, sessions.SessionMiddleware):
    def response_needs_thread(self, request: HttpRequest) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class AuthenticationMiddleware(InlineHooks, auth.AuthenticationMiddleware):
    """Sets the lazy `request.user` and `request.auser`; the user is loaded only when asked for."""


class MessageMiddleware(InlineHooks, messages.MessageMiddleware):
    def response_needs_thread(self, request: HttpRequest) -> bool:
        # Messages that do not fit the cookie go to the session, which may have to be loaded.
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class XFrameOptionsMiddleware(InlineHooks, clickjacking.XFrameOptionsMiddleware):
    pass


class ContentSecurityPolicyMiddleware(InlineHooks, csp.ContentSecurityPolicyMiddleware):
    """Gives the request its lazy nonce and the response its policy."""


# Labels come from a fixed set: a client's made-up method or path must not add a series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@async_only_middleware
def request_metrics(get_response: Any) -> Any:
    """Outermost: counts every answer by the URL pattern it resolved to (never the raw path, which
    holds ids) and its final status; a response is counted when its headers are ready (an SSE
    stream as it starts). Static files, served before any URL is resolved, count as `static`."""
    static_prefix = "/" + settings.STATIC_URL.lstrip("/")

    async def middleware(request: HttpRequest) -> HttpResponse:
        response = await get_response(request)
        match = getattr(request, "resolver_match", None)
        if match is not None:
            route = match.route or match.view_name
        else:
            route = "static" if request.path.startswith(static_prefix) else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "other"
        metrics.request_answered(route, method, response.status_code)
        return response

    return middleware
