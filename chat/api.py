"""The JSON HTTP API: conversations, sending, editing and regenerating (branches), stopping,
uploads, models, prompt presets and the usage meter. Its errors and helpers are in
chat/responses.py; the SSE door is chat/sse.py."""

import asyncio
from typing import Any

import redis
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.core.paginator import InvalidPage, Paginator
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import reverse
from django.utils.http import content_disposition_header, urlencode

from billing import admission
from chat import actions, branches, paging, search, uploads
from chat.actions import ActionError
from chat.models import Conversation, Upload
from chat.replies import edit_message, regenerate_message, send_message, stop_message
from chat.responses import api_view, json_error, json_response, read_json
from support import feedback

PAGE_SIZE = 20


@api_view({"GET", "POST"})
def conversations(request: HttpRequest, user: Any) -> HttpResponse:
    if request.method == "POST":
        data = read_json(request)
        for name in ("title", "model", "system_prompt"):
            if name in data and not isinstance(data[name], str):
                raise ActionError("invalid_input", f"{name} must be text.")
        conversation = actions.create_conversation(
            user, model_name=data.get("model") or None, title=data.get("title", ""), system_prompt=data.get("system_prompt", ""),
            preset=data.get("preset"),
        )
        return json_response(conversation.as_dict(), status=201)
    query = search.clean_query(request.GET.get("q", ""))
    archived = request.GET.get("archived") in {"1", "true"}
    source = request.GET.get("source", "chat")
    paginator = Paginator(actions.user_conversations(user, query, archived, source), PAGE_SIZE)
    try:
        page = paginator.page(request.GET.get("page", 1))
    except InvalidPage:
        raise ActionError("not_found", "No such page.") from None
    return json_response(
        {
            "results": [_listed(conversation, query) for conversation in page.object_list],
            "page": page.number,
            "pages": paginator.num_pages,
            "count": paginator.count,
            "next": page.next_page_number() if page.has_next() else None,
        }
    )


def _listed(conversation: Conversation, query: str) -> dict[str, Any]:
    """A search result also says how it matched: highlighted title, and a snippet of a matching message."""
    data = conversation.as_dict()
    if query:
        data["match"] = search.hit(conversation, query).as_dict(query)
    return data


@api_view({"GET", "PATCH", "DELETE"})
def conversation_detail(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    """The conversation with its newest page of messages (oldest first); `?before=<message id>`
    gives the page before that message, `?limit=` its size, and `older` the next older page's URL."""
    conversation = actions.get_conversation_for(user, pk)
    if request.method == "DELETE":
        actions.delete_conversation(conversation)
        return HttpResponse(status=204)
    before, limit = paging.parse_query(request.GET)  # before any change: a refused request changes nothing
    if request.method == "PATCH":
        actions.update_conversation(conversation, read_json(request))
    return json_response(_detail(conversation, before, limit))


def _detail(conversation: Conversation, before: int | None = None, limit: int = paging.PAGE_SIZE) -> dict[str, Any]:
    """The conversation with a page of the branch it shows; each message with its siblings' ids and
    the user's rating of it (replies only; null when none)."""
    page = paging.message_page(conversation, before, limit)
    siblings = branches.siblings_of(conversation, page.messages)
    ratings = feedback.of_messages(page.messages)
    data = conversation.as_dict()
    data["current_leaf"] = conversation.current_leaf_id
    data["messages"] = [
        message.as_dict(siblings[message.pk]) | {"feedback": ratings.get(message.pk)} for message in page.messages
    ]
    data["has_more"] = page.has_more
    data["older"] = _older_url(conversation.pk, page, limit) if page.has_more else None
    return data


def _older_url(pk: int, page: paging.MessagePage, limit: int) -> str:
    """The next older page, the same size as this one."""
    query = {"before": page.oldest_id} | ({"limit": limit} if limit != paging.PAGE_SIZE else {})
    return f"{reverse('api-conversation', args=[pk])}?{urlencode(query)}"


@api_view({"POST"})
async def conversation_messages(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    data = read_json(request)
    event = await send_message(user, pk, data.get("content"), data.get("model"), attachment_ids=data.get("attachments"))
    return json_response(event, status=201)


@api_view({"POST"})
async def message_edit(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    """A new version of a user message (`{"content": "..."}`) and its reply: answered like a send."""
    data = read_json(request)
    _only(data, {"content"})
    return json_response(await edit_message(user, pk, data.get("content")), status=201)


@api_view({"POST"})
async def message_regenerate(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    """A new version of a finished reply (a retry of a failed one too): answered like a send."""
    _only(read_json(request), set())
    return json_response(await regenerate_message(user, pk), status=201)


@api_view({"POST"})
def message_show(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    """Show the branch through this message (one of a message's siblings, usually): stored, so a
    reload and other tabs show it too. Answers the conversation's detail on that branch."""
    _only(read_json(request), set())
    message = actions.get_message_for(user, pk)
    conversation = actions.get_conversation_for(user, message.conversation_id)
    with transaction.atomic():
        branches.show(conversation, message)
    return json_response(_detail(conversation))


def _only(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise ActionError("invalid_input", f"Unknown fields: {', '.join(sorted(unknown))}.")


@api_view({"POST"})
async def message_stop(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    return json_response(await stop_message(user, pk), status=202)


# What a multipart form adds around its one file: boundaries and the part's headers.
FORM_OVERHEAD_BYTES = 64 * 1024


@api_view({"GET", "POST"})
async def conversation_uploads(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    """The conversation's files; POST attaches one (multipart/form-data, field `file`).

    Async so that the work of an upload stays off the database thread every stream shares: the
    form is parsed (unless a cookie session's CSRF check did so already, on the event loop: a few
    milliseconds for 5 MiB) and the file read (a PDF's text may take a while) on threads of their
    own; only the checks and the write go to the database thread."""
    if request.method == "GET":
        return json_response({"uploads": await _listed_uploads(user, pk)})
    await database_sync_to_async(uploads.check_room)(user, pk)
    name, data = await asyncio.to_thread(_posted_file, request)
    contents = await asyncio.to_thread(uploads.inspect_file, name, data)
    upload = await database_sync_to_async(uploads.save_upload)(user, pk, contents)
    return json_response({"upload": upload.as_dict()}, status=201)


@database_sync_to_async
def _listed_uploads(user: Any, pk: int) -> list[dict[str, Any]]:
    return [upload.as_dict() for upload in uploads.uploads_for(user, pk)]


def _posted_file(request: HttpRequest) -> tuple[str, bytes]:
    if request.content_type != "multipart/form-data":
        raise ActionError("unsupported_media_type", "Send the file as multipart/form-data, in the field `file`.")
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > settings.PARLEY_UPLOAD_MAX_BYTES + FORM_OVERHEAD_BYTES:
        raise uploads.too_large()  # known from the header: the form need not be parsed
    try:
        files = request.FILES.getlist("file")
    except MultiPartParserError:
        raise ActionError("invalid_input", "The form could not be read.") from None
    if len(files) != 1:
        raise ActionError("invalid_input", "Send one file, in the field `file`.")
    if files[0].size > settings.PARLEY_UPLOAD_MAX_BYTES:
        raise uploads.too_large()
    return files[0].name or "", files[0].read()


@api_view({"GET", "DELETE"})
def upload_detail(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    """The file as it was uploaded, always as a download; DELETE removes it."""
    if request.method == "DELETE":
        uploads.delete_upload(user, pk)
        return HttpResponse(status=204)
    return _download(uploads.get_upload_for(user, pk))


def _download(upload: Upload) -> HttpResponse:
    is_text = upload.content_type.startswith("text/")
    return HttpResponse(
        bytes(upload.data),  # PostgreSQL gives a memoryview
        content_type=f"{upload.content_type}; charset=utf-8" if is_text else upload.content_type,
        headers={
            # An attachment, never shown in the site's own origin; nosniff keeps its declared type.
            "Content-Disposition": content_disposition_header(as_attachment=True, filename=upload.name),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-cache",
        },
    )


@api_view({"GET"})
def upload_image(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    """An image file shown in the page (a thumbnail on its message): its own image type, checked at
    upload from its header, kept with nosniff, and a sandbox policy so that even a file a browser
    took for a document could run nothing in the site's origin. Anything but an image is a 404."""
    upload = uploads.get_upload_for(user, pk)
    if not upload.is_image:
        raise ActionError("not_found")
    return HttpResponse(
        bytes(upload.data),
        content_type=upload.content_type,
        headers={
            "Content-Disposition": content_disposition_header(as_attachment=False, filename=upload.name),
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=3600",
        },
    )


@api_view({"GET"})
def usage(request: HttpRequest, user: Any) -> HttpResponse:
    """The user's plan and what is left of each of its limits in the current minute, day and month."""
    try:
        return json_response(admission.usage_for(user.pk))
    except redis.RedisError:
        return json_error("busy", "Usage cannot be read right now.", retry_after=5)


@api_view({"GET"})
def prompt_presets(request: HttpRequest, user: Any) -> HttpResponse:
    """The system prompts admins offer, in their order."""
    return json_response({"results": [preset.as_dict() for preset in actions.offered_presets()]})


@api_view({"GET"})
def models(request: HttpRequest, user: Any) -> HttpResponse:
    from chat.actions import ActionError, default_model
    from chat.models import ChatModel

    try:
        default: str | None = default_model().name
    except ActionError:
        default = None
    return json_response(
        {"results": [model.as_dict() for model in ChatModel.objects.pickable()], "default": default}
    )

