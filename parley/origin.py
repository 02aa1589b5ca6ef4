"""WebSocket Origin check: a browser's handshake must come from the site itself; scripts without
Origin need a token.

Browsers send cookies with a WebSocket handshake from any page of the same site, and a site's
cookies ignore ports and schemes: a page on `http://127.0.0.1:9999` would open the socket of the
user signed in on `http://127.0.0.1:8000` with their session. So the Origin must name this site
exactly, scheme, host and port, as Django's CSRF check demands of a cookie-authenticated POST
(django.middleware.csrf `_origin_verified`), or be listed in `CSRF_TRUSTED_ORIGINS`.
"""

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from accounts.middleware import bearer_from_header

CLOSE_FORBIDDEN_ORIGIN = 4403


class OriginCheck:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not self.allowed(scope):
            await receive()  # the websocket.connect event
            # Accepted, then closed at once with the reason: nothing is read or sent in between, and
            # the client learns the code, which a refused handshake (HTTP 403) would not tell it.
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": CLOSE_FORBIDDEN_ORIGIN})
            return None
        return await self.application(scope, receive, send)

    @staticmethod
    def allowed(scope: dict[str, Any]) -> bool:
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin")
        if origin is None:
            # Browsers always send Origin, so a handshake without one is a script: it must bring a token.
            return bearer_from_header(headers.get(b"authorization")) is not None
        return origin_allowed(origin.decode("latin-1"), headers.get(b"host", b"").decode("latin-1"), is_secure(scope, headers))


def is_secure(scope: dict[str, Any], headers: dict[bytes, bytes]) -> bool:
    """As `HttpRequest.is_secure()`: TLS to this process, or a trusted proxy's header saying so."""
    if settings.SECURE_PROXY_SSL_HEADER:
        name, value = settings.SECURE_PROXY_SSL_HEADER
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        forwarded = headers.get(header)
        if forwarded is not None:
            return forwarded.decode("latin-1").split(",")[0].strip() == value
    return scope.get("scheme") in {"wss", "https"}


def origin_allowed(origin: str, host: str, secure: bool) -> bool:
    """The rule Django's CSRF middleware applies to an Origin header, for a request to `host`."""
    domain, _ = split_domain_port(host)
    if domain and validate_host(domain, settings.ALLOWED_HOSTS) and origin == f"{'https' if secure else 'http'}://{host}":
        return True
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    # "https://*.example.com" trusts example.com's subdomains, as it does for Django's CSRF check.
    wildcards = (urlsplit(trusted) for trusted in settings.CSRF_TRUSTED_ORIGINS if "*" in trusted)
    return any(
        trusted.scheme == parsed.scheme and is_same_domain(parsed.netloc, trusted.netloc.lstrip("*"))
        for trusted in wildcards
    )
