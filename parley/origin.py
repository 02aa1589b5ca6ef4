"""WebSocket Origin check: browsers must come from an allowed host; scripts without Origin need a token."""

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import validate_host

from accounts.middleware import bearer_from_header


class OriginCheck:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not self.allowed(scope):
            await receive()  # the websocket.connect event
            await send({"type": "websocket.close", "code": 4403})
            return None
        return await self.application(scope, receive, send)

    @staticmethod
    def allowed(scope: dict[str, Any]) -> bool:
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin")
        if origin is None:
            # Browsers always send Origin, so a handshake without one is a script: it must bring a token.
            return bearer_from_header(headers.get(b"authorization")) is not None
        parsed = urlsplit(origin.decode("latin-1"))
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            return False
        hostname = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        origin_text = f"{parsed.scheme}://{parsed.netloc}"
        return validate_host(hostname, settings.ALLOWED_HOSTS) or origin_text in settings.CSRF_TRUSTED_ORIGINS
