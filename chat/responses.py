"""The JSON side of every HTTP door: the one error shape, the RateLimit fields of a refusal, JSON
bodies read strictly, and `api_view` (authentication, methods, ActionError to JSON)."""

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, RawPostDataException

from chat.actions import ActionError
from observability import context
from streaming import events


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def json_error(
    code: str, detail: str = "", retry_after: float | None = None, limit: dict[str, Any] | None = None
) -> HttpResponse:
    event = events.request_error(code, detail, retry_after)
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else {}
    body: dict[str, Any] = {"code": event["code"], "text": event["text"], "retry_after": retry_after}
    if limit is not None:
        body["limit"] = limit
        headers.update(rate_limit_headers(limit))
    return json_response({"error": body}, status=events.http_status(code), headers=headers)


def rate_limit_headers(limit: dict[str, Any]) -> dict[str, str]:
    """The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers), naming the limit that was hit.
    Their quotas are integers: a dollar budget is given in cents there (the body has dollars)."""
    scale, unit = (100, ';qu="usd-cents"') if limit["unit"] == "usd" else (1, "")
    allowed, remaining = int(limit["allowed"] * scale), int(limit["remaining"] * scale)
    headers = {
        "RateLimit-Limit": str(allowed),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Policy": f'{allowed};name="{limit["name"]}"{unit}',
    }
    if limit["resets_in"] is not None:
        headers["RateLimit-Reset"] = str(limit["resets_in"])
    return headers


def read_json(request: HttpRequest) -> dict[str, Any]:
    if not _is_json(request.content_type) and _has_body(request):
        raise ActionError("unsupported_media_type")
    return read_json_bytes(request.body, request.content_type)


def read_json_bytes(body: bytes, content_type: str | None) -> dict[str, Any]:
    """A JSON object from a body (the protocol doors', which no CSRF check has read)."""
    if not _is_json(content_type or "") and body:
        raise ActionError("unsupported_media_type")
    if not body:
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ActionError("invalid_json") from None
    if not isinstance(data, dict):
        raise ActionError("invalid_input", "The body must be a JSON object.")
    return data


def _is_json(content_type: str) -> bool:
    """JSON by name (`application/json`, `application/merge-patch+json`, ...), or a body sent without a type."""
    return content_type in {"", "application/json"} or content_type.endswith("+json")


def _has_body(request: HttpRequest) -> bool:
    # The CSRF check of a cookie session looks for its token among the form fields of a POST, and
    # parsing a multipart form consumes the raw body: that refusal to hand it out means there was one.
    try:
        return bool(request.body)
    except RawPostDataException:
        return True


def api_view(methods: set[str]) -> Callable[..., Any]:
    """Auth (session or bearer), method check and ActionError -> JSON error, for sync and async views."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        if asyncio.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                if request.method not in methods:
                    return json_error("method_not_allowed")
                user = await request.auser()
                if not user.is_authenticated:
                    return json_error("not_authenticated")
                context.set_user(user.pk)  # for the log lines of what the view does
                try:
                    return await view(request, user, *args, **kwargs)
                except ActionError as error:
                    return json_error(error.code, error.detail, error.retry_after, error.limit)

            return async_wrapper

        @functools.wraps(view)
        def sync_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return json_error("method_not_allowed")
            if not request.user.is_authenticated:
                return json_error("not_authenticated")
            context.set_user(request.user.pk)
            try:
                return view(request, request.user, *args, **kwargs)
            except ActionError as error:
                return json_error(error.code, error.detail, error.retry_after, error.limit)

        return sync_wrapper

    return decorate
