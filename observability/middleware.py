"""The probe doors answered before the rest of the middleware.

Load balancers and orchestrators probe a container by its IP address, over plain HTTP, without
cookies. Behind the rest of the stack that would fail: a Host of `10.1.2.3:8000` is not in
ALLOWED_HOSTS (400), SECURE_SSL_REDIRECT sends a 301, and sessions, CSRF and sign-in are work a
probe does not need. These three paths answer whatever the Host header says: they build no link or
redirect from it, so host-header poisoning has nothing to poison; every other path keeps Django's
ALLOWED_HOSTS check. `/metrics` is guarded by observability/access.py instead of sign-in.
"""

from collections.abc import Awaitable, Callable

from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.utils.decorators import async_only_middleware

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@async_only_middleware
def probes(get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> Callable[[HttpRequest], Awaitable[HttpResponse]]:
    async def middleware(request: HttpRequest) -> HttpResponse:
        if request.path_info in PROBE_PATHS:
            try:
                match = resolve(request.path_info)
            except Resolver404:
                return await get_response(request)
            request.resolver_match = match
            return await match.func(request)
        return await get_response(request)

    return middleware
