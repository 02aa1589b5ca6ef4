"""The console's JSON doors for scripts and other tools, with a session or an API token: the same
policy, masking and record as the pages (a 404 in the API's error shape for anyone else)."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from chat.responses import json_error, json_response
from support import audit, listing
from support.models import AuditEvent
from support.policy import Act, require, support_only
from support.templatetags.support import masked
from support.transcript import conversation_for, read


@support_only
@require_GET
def conversations(request: HttpRequest) -> HttpResponse:
    require(request, Act.VIEW)
    try:
        filters = listing.parse(request.GET)
        after = request.GET.get("after", "")
        current = listing.page(filters, listing.Cursor.decode(after) if after else None)
    except listing.BadFilter as bad:
        return json_error("invalid_input", str(bad))
    audit.record(
        request.user, AuditEvent.Action.LIST, conversations=[row.pk for row in current.rows],
        query=listing.describe(filters),
    )
    rows = [
        {
            "id": row.pk, "title": masked(row.display_title), "user": row.owner.get_username(),
            "plan": row.plan_label, "model": row.model.name,
            "created": row.created.isoformat(), "updated": row.updated.isoformat(), "flagged": row.is_flagged,
            "negative_feedback": row.has_negative, "failed_stopped_or_interrupted": row.has_problem,
        }
        for row in current.rows
    ]
    response = json_response({"conversations": rows, "next": current.next.encode() if current.next else None})
    response["Cache-Control"] = "no-store"
    return response


@support_only
@require_GET
def conversation(request: HttpRequest, pk: int) -> HttpResponse:
    found = conversation_for(pk)
    require(request, Act.VIEW, found)
    shown = read(found, everything=True)
    audit.record(request.user, AuditEvent.Action.VIEW, conversations=[found.pk], detail={"api": True})
    response = json_response(shown.as_dict())
    response["Cache-Control"] = "no-store"
    return response
