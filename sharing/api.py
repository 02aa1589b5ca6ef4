"""The owner's HTTP doors: share a conversation, list and revoke its links, export it."""

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.http import content_disposition_header

from chat import actions as chat_actions
from chat.responses import api_view, json_response, read_json
from sharing import actions, export
from sharing.models import SharedLink


def _link_dict(request: HttpRequest, link: SharedLink) -> dict[str, Any]:
    return link.as_dict(request.build_absolute_uri(link.path()))


@api_view({"GET", "POST"})
def conversation_shares(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    """POST makes a link (body optional: `{"show_owner": true}`); GET lists the conversation's links."""
    if request.method == "POST":
        data = read_json(request)
        unknown = set(data) - {"show_owner"}
        if unknown:
            raise chat_actions.ActionError("invalid_input", f"Unknown fields: {', '.join(sorted(unknown))}.")
        link = actions.create_link(user, pk, data.get("show_owner", False))
        return json_response(_link_dict(request, link), status=201)
    return json_response({"results": [_link_dict(request, link) for link in actions.links_of(user, pk)]})


@api_view({"GET"})
def shares(request: HttpRequest, user: Any) -> HttpResponse:
    """Every link of the user's not yet revoked."""
    return json_response({"results": [_link_dict(request, link) for link in actions.links_of(user)]})


@api_view({"DELETE"})
def share_detail(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    actions.revoke_link(user, pk)
    return HttpResponse(status=204)


@api_view({"GET"})
def conversation_export(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    """`?format=md` or `?format=json`, always as a download."""
    conversation = chat_actions.get_conversation_for(user, pk)
    result = export.export(conversation, request.GET.get("format"))
    return HttpResponse(
        result.body,
        content_type=result.content_type,
        headers={
            "Content-Disposition": content_disposition_header(as_attachment=True, filename=result.filename),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-cache",
        },
    )
