"""The JSON HTTP API and the Server-Sent Events stream. One error shape everywhere."""

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import redis
from django.conf import settings
from django.core.paginator import InvalidPage, Paginator
from django.http import HttpRequest, HttpResponse, RawPostDataException, StreamingHttpResponse

from chat import actions, admission, events
from chat.actions import ActionError
from chat.replies import attach, send_message, stop_message

PAGE_SIZE = 20


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
    if not request.body:
        return {}
    try:
        data = orjson.loads(request.body)
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
            try:
                return view(request, request.user, *args, **kwargs)
            except ActionError as error:
                return json_error(error.code, error.detail, error.retry_after, error.limit)

        return sync_wrapper

    return decorate


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_error("not_found")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_response({"error": {"code": "server_error", "text": "Something went wrong on our side.", "retry_after": None}}, status=500)
    from django.views.defaults import server_error as default_server_error

    return default_server_error(request)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF stays on for cookie sessions (token requests are exempt); API callers get the JSON shape."""
    if request.path.startswith("/api/"):
        return json_error("forbidden", "CSRF check failed: send the X-CSRFToken header, or use a bearer token.")
    from django.views.csrf import csrf_failure as default_failure

    return default_failure(request, reason)


@api_view({"GET", "POST"})
def conversations(request: HttpRequest, user: Any) -> HttpResponse:
    if request.method == "POST":
        data = read_json(request)
        for name in ("title", "model", "system_prompt"):
            if name in data and not isinstance(data[name], str):
                raise ActionError("invalid_input", f"{name} must be text.")
        conversation = actions.create_conversation(
            user, model_name=data.get("model") or None, title=data.get("title", ""), system_prompt=data.get("system_prompt", "")
        )
        return json_response(conversation.as_dict(), status=201)
    query = request.GET.get("q", "")
    archived = request.GET.get("archived") in {"1", "true"}
    paginator = Paginator(actions.user_conversations(user, query, archived), PAGE_SIZE)
    try:
        page = paginator.page(request.GET.get("page", 1))
    except InvalidPage:
        raise ActionError("not_found", "No such page.") from None
    return json_response(
        {
            "results": [conversation.as_dict() for conversation in page.object_list],
            "page": page.number,
            "pages": paginator.num_pages,
            "count": paginator.count,
            "next": page.next_page_number() if page.has_next() else None,
        }
    )


@api_view({"GET", "PATCH", "DELETE"})
def conversation_detail(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    conversation = actions.get_conversation_for(user, pk)
    if request.method == "PATCH":
        actions.update_conversation(conversation, read_json(request))
    elif request.method == "DELETE":
        actions.delete_conversation(conversation)
        return HttpResponse(status=204)
    data = conversation.as_dict()
    data["messages"] = [message.as_dict() for message in conversation.messages.order_by("id")]
    return json_response(data)


@api_view({"POST"})
async def conversation_messages(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    data = read_json(request)
    event = await send_message(user, pk, data.get("content"), data.get("model"))
    return json_response(event, status=201)


@api_view({"POST"})
async def message_stop(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    return json_response(await stop_message(user, pk), status=202)


@api_view({"GET"})
async def message_events(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    after = request.headers.get("Last-Event-ID") or request.GET.get("after", "")
    if events.parse_cursor(after) is None:
        raise ActionError("invalid_input", 'after / Last-Event-ID must be a cursor such as "120-0".')
    stream = attach(user, pk, after)
    try:
        first = await anext(stream)  # authorization errors become JSON errors, not a broken stream
    except StopAsyncIteration:
        first = []
    response = StreamingHttpResponse(_sse(first, stream), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache, no-transform"
    response["X-Accel-Buffering"] = "no"
    return response


async def _sse(first: list[bytes], stream: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[list[bytes] | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for batch in stream:
                queue.put_nowait(batch)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(pump())
    try:
        yield b"retry: 2000\n\n" + _sse_frames(first)
        if first and _ends(first):
            return
        while True:
            try:
                batch = await asyncio.wait_for(queue.get(), timeout=settings.PARLEY_SSE_KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if batch is None:
                return
            yield _sse_frames(batch)
            if _ends(batch):
                return
    finally:
        task.cancel()


def _ends(batch: list[bytes]) -> bool:
    return orjson.loads(batch[-1])["type"] in {"done", "error"}


def _sse_frames(batch: list[bytes]) -> bytes:
    out = bytearray()
    for payload in batch:
        event = orjson.loads(payload)
        out += b"event: %s\nid: %s\ndata: %s\n\n" % (event["type"].encode(), event["cursor"].encode(), payload)
    return bytes(out)


@api_view({"GET"})
def usage(request: HttpRequest, user: Any) -> HttpResponse:
    """The user's plan and what is left of each of its limits in the current minute, day and month."""
    try:
        return json_response(admission.usage_for(user.pk))
    except redis.RedisError:
        return json_error("busy", "Usage cannot be read right now.", retry_after=5)


@api_view({"GET"})
def models(request: HttpRequest, user: Any) -> HttpResponse:
    from chat.models import ChatModel

    return json_response({"results": [model.as_dict() for model in ChatModel.objects.offered()]})

