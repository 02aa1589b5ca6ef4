"""The probe doors answered before the rest of the middleware.

Load balancers and orchestrators probe a container by its IP address, over plain HTTP, without
cookies. Behind the rest of the stack that would fail: a Host of `10.1.2.3:8000` is not in
ALLOWED_HOSTS (400), SECURE_SSL_REDIRECT sends a 301, and sessions, CSRF and sign-in are work a
probe does not need. These three paths answer whatever the Host header says: they build no link or
redirect from it, so host-header poisoning has nothing to poison; every other path keeps Django's
ALLOWED_HOSTS check. `/metrics` is guarded by observability/access.py instead of sign-in.

Skipping the security middleware must not mean skipping its headers: a probe's answer is JSON or
text that loads nothing, so it gets a policy that allows nothing, with the rest of the site's
headers (HSTS over HTTPS).
"""

from collections.abc import Awaitable, Callable

from django.conf import settings
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
            return with_security_headers(request, await match.func(request))
        return await get_response(request)

    return middleware


def with_security_headers(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    response.headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", settings.SECURE_REFERRER_POLICY or "same-origin")
    response.headers.setdefault("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY or "same-origin")
    if settings.SECURE_HSTS_SECONDS and request.is_secure():
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        response.headers.setdefault("Strict-Transport-Security", hsts)
    return response
