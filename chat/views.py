"""Chat pages and their htmx partials (the sidebar, earlier messages). All changes go through chat.actions."""

import logging
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve, reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event
from django_htmx.middleware import HtmxDetails

from accounts.models import User
from billing import admission
from chat import actions, branches, paging, search, uploads
from chat.models import SYSTEM_PROMPT_MAX, ChatModel, Conversation, Message
from chat.presets import resolve_system
from support import feedback
from support.models import COMMENT_MAX

REPLY_DETAILS = ("provider", "model", "model_version", "usage", "ttft_ms", "duration_ms", "routing")
SIDEBAR_LIMIT = 200  # older conversations stay reachable through the search box

logger = logging.getLogger(__name__)


class PageRequest(HttpRequest):
    """What the middleware stack (auth + django-htmx) guarantees on these views."""

    user: User
    htmx: HtmxDetails


def _own_conversation(request: PageRequest, pk: int) -> Conversation:
    try:
        return actions.get_conversation_for(request.user, pk)
    except actions.ActionError:
        raise Http404("No such conversation.") from None


def _current_id(request: PageRequest) -> int | None:
    """The conversation open in the page that sent an htmx request, to keep it highlighted."""
    path = request.htmx.current_url_abs_path if request.htmx else None
    if not path:
        return None
    try:
        match = resolve(path.split("?", 1)[0])
    except Resolver404:
        return None
    return match.kwargs.get("pk") if match.view_name == "chat:conversation" else None


def _sidebar_context(request: PageRequest, current_id: int | None) -> dict[str, Any]:
    q = search.clean_query(request.GET.get("q", ""))
    conversations = list(actions.user_conversations(request.user, q)[:SIDEBAR_LIMIT])
    if q:
        for item in conversations:
            item.hit = search.hit(item, q)  # type: ignore[attr-defined]  # what the sidebar shows of the match
    return {"conversations": conversations, "q": q, "current_id": current_id}


def _payloads(conversation: Conversation, messages: list[Message]) -> list[dict[str, Any]]:
    siblings = branches.siblings_of(conversation, messages)
    ratings = feedback.of_messages(messages)
    return [_message_payload(message, siblings[message.pk], ratings.get(message.pk)) for message in messages]


def _message_payload(message: Message, siblings: list[int], rating: dict[str, Any] | None = None) -> dict[str, Any]:
    """What chat.js needs to draw a message; the content is raw text, rendered in the browser."""
    payload = {
        "id": message.pk,
        "parent": message.parent_id,
        "siblings": siblings,  # its versions, for "‹ 2 / 3 ›"
        "role": message.role,
        "status": message.status,
        "content": message.content,
        "error": {"code": message.error_code, "text": message.error_text} if message.error_code else None,
        "notice": message.notice or None,
        "attachments": message.attachment_dicts(),
        # Task cards take their place among the messages by time (static/js/tasks.js).
        "created": message.created.isoformat(),
        "feedback": rating,  # the user's thumb and comment (static/js/feedback.js)
    }
    if message.role == Message.Role.ASSISTANT:  # what its Details show (static/js/details.js), as the API has it
        full = message.as_dict()
        payload |= {name: full[name] for name in REPLY_DETAILS}
    return payload


def _chat_page(request: PageRequest, conversation: Conversation | None) -> HttpResponse:
    models = list(ChatModel.objects.pickable())
    presets = actions.offered_presets()
    try:
        default_model: ChatModel | None = actions.default_model()
    except actions.ActionError:
        default_model = None
    # The newest page only: "Load earlier messages" fetches the ones before it (`earlier`).
    page = paging.message_page(conversation) if conversation else paging.MessagePage([], has_more=False)
    context = {
        **_sidebar_context(request, conversation.pk if conversation else None),
        "conversation": conversation,
        "chat_messages": _payloads(conversation, page.messages) if conversation else [],
        "earlier_url": _earlier_url(conversation.pk, page) if conversation else None,
        "models": models,
        "default_model": default_model,
        "max_chars": settings.PARLEY_MESSAGE_MAX_CHARS,
        # The composer's chips: files not sent with a message yet.
        "uploads": [upload.as_dict() for upload in uploads.unsent_for(request.user, conversation.pk)] if conversation else [],
        "upload_max_bytes": settings.PARLEY_UPLOAD_MAX_BYTES,
        "image_max_bytes": min(settings.PARLEY_IMAGE_MAX_BYTES, settings.PARLEY_UPLOAD_MAX_BYTES),
        "attachments_max": settings.PARLEY_ATTACHMENTS_PER_MESSAGE,
        "usage": _usage(request.user.pk),
        "presets": presets,
        "presets_data": [preset.as_dict() for preset in presets],
        # A conversation following its preset shows the version its next reply gets.
        "system_prompt": resolve_system(conversation).text if conversation else "",
        "system_prompt_max": SYSTEM_PROMPT_MAX,
        "feedback_comment_max": COMMENT_MAX,
    }
    return render(request, "chat/page.html", context)


def _earlier_url(pk: int, page: paging.MessagePage) -> str | None:
    """Where "Load earlier messages" fetches the page before this one; None at the start."""
    if not page.has_more:
        return None
    return f"{reverse('chat:earlier', args=[pk])}?{urlencode({'before': page.oldest_id})}"


def _usage(user_id: int) -> dict[str, Any] | None:
    """The meter's first reading; the page still opens when Redis does not answer (the meter then loads later)."""
    try:
        return admission.usage_for(user_id)
    except redis.RedisError:
        logger.warning("Usage of user %s could not be read for the chat page", user_id, exc_info=True)
        return None


@login_required
@require_GET
def home(request: PageRequest) -> HttpResponse:
    return _chat_page(request, None)


@login_required
@require_GET
def conversation(request: PageRequest, pk: int) -> HttpResponse:
    return _chat_page(request, _own_conversation(request, pk))


@login_required
@require_GET
def earlier(request: PageRequest, pk: int) -> HttpResponse:
    """The page of messages before `?before=`, as the partial that replaces "Load earlier
    messages": its messages as JSON, drawn by chat.js like every other, and the next such button."""
    conversation = _own_conversation(request, pk)
    try:
        before, limit = paging.parse_query(request.GET)
    except actions.ActionError as exc:
        return HttpResponseBadRequest(exc.detail, content_type="text/plain")
    if before is None:
        return HttpResponseBadRequest("before must be a message id.", content_type="text/plain")
    page = paging.message_page(conversation, before, limit)
    context = {
        "earlier_url": _earlier_url(conversation.pk, page),
        "earlier_messages": _payloads(conversation, page.messages),
    }
    return render(request, "chat/page.html#earlier", context)


@login_required
@require_GET
def sidebar(request: PageRequest) -> HttpResponse:
    return render(request, "chat/page.html#conversation-list", _sidebar_context(request, _current_id(request)))


@login_required
@require_POST
def new_conversation(request: PageRequest) -> HttpResponse:
    """Creates an empty conversation; the chat page itself creates one on the first send instead."""
    try:
        created = actions.create_conversation(request.user, request.POST.get("model") or None)
    except actions.ActionError as exc:
        return HttpResponse(exc.detail or "That model is not offered.", status=400, content_type="text/plain")
    url = reverse("chat:conversation", args=[created.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@login_required
@require_http_methods(["GET", "POST"])
def rename(request: PageRequest, pk: int) -> HttpResponse:
    item = _own_conversation(request, pk)
    title, error = item.title, ""
    if request.method == "POST":
        title = request.POST.get("title", "")
        try:
            actions.rename_conversation(item, title)
        except actions.ActionError as exc:
            error = exc.detail or "That title cannot be used."
        else:
            return _renamed(request, item)
    template = "chat/rename.html#rename-form" if request.htmx else "chat/rename.html"
    context = {"item": item, "title": title, "error": error}
    # 422 is swapped by htmx (see the htmx-config meta tag) so the error shows inline.
    return render(request, template, context, status=422 if error else 200)


def _renamed(request: PageRequest, item: Conversation) -> HttpResponse:
    if not request.htmx:
        return redirect("chat:conversation", item.pk)
    context = {"item": item, "current_id": _current_id(request)}
    response = render(request, "chat/page.html#conversation-item", context)
    # chat.js updates the page heading when the open conversation is the renamed one.
    return trigger_client_event(response, "parley:conversation-renamed", {"id": item.pk, "title": item.display_title})


@login_required
@require_http_methods(["GET", "POST"])
def delete(request: PageRequest, pk: int) -> HttpResponse:
    item = _own_conversation(request, pk)
    if request.method == "GET":  # the confirmation page for browsers without htmx
        return render(request, "chat/delete.html", {"conversation": item})
    was_open = _current_id(request) == item.pk
    actions.delete_conversation(item)
    if not request.htmx:
        return redirect("chat:home")
    if was_open:
        return HttpResponseClientRedirect(reverse("chat:home"))
    return HttpResponse("")  # swapped over the sidebar item, which removes it
