"""The JSON HTTP API: conversations, sending, stopping, models and the usage meter. Its errors
and helpers are in chat/responses.py; the SSE door is chat/sse.py."""

from typing import Any

import redis
from django.core.paginator import InvalidPage, Paginator
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.http import urlencode

from billing import admission
from chat import actions, paging
from chat.actions import ActionError
from chat.replies import send_message, stop_message
from chat.responses import api_view, json_error, json_response, read_json

PAGE_SIZE = 20


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
    """The conversation with its newest page of messages (oldest first); `?before=<message id>`
    gives the page before that message, `?limit=` its size, and `older` the next older page's URL."""
    conversation = actions.get_conversation_for(user, pk)
    if request.method == "DELETE":
        actions.delete_conversation(conversation)
        return HttpResponse(status=204)
    before, limit = paging.parse_query(request.GET)  # before any change: a refused request changes nothing
    if request.method == "PATCH":
        actions.update_conversation(conversation, read_json(request))
    page = paging.message_page(conversation, before, limit)
    data = conversation.as_dict()
    data["messages"] = [message.as_dict() for message in page.messages]
    data["has_more"] = page.has_more
    data["older"] = _older_url(conversation.pk, page, limit) if page.has_more else None
    return json_response(data)


def _older_url(pk: int, page: paging.MessagePage, limit: int) -> str:
    """The next older page, the same size as this one."""
    query = {"before": page.oldest_id} | ({"limit": limit} if limit != paging.PAGE_SIZE else {})
    return f"{reverse('api-conversation', args=[pk])}?{urlencode(query)}"


@api_view({"POST"})
async def conversation_messages(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    data = read_json(request)
    event = await send_message(user, pk, data.get("content"), data.get("model"))
    return json_response(event, status=201)


@api_view({"POST"})
async def message_stop(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    return json_response(await stop_message(user, pk), status=202)


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

