"""The support console's pages: thin doors over listing, fulltext, transcript, annotations and
exports. Every one is `support_only` (a 404 for anyone else), asks `policy.require` for what it
does, and records what was looked at in the audit record."""

from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import Plan
from agents.models import AgentRun
from chat.models import ChatModel, Conversation, Message
from providers import AUTO
from support import annotations, audit, exports, fulltext, listing
from support.models import AuditEvent, Flag
from support.policy import Act, may, require, support_only
from support.transcript import conversation_for, read, revealed_message

QUERY_MAX = 200
RUN_HITS = 20  # agent runs matching, shown above the messages on a search's first page


def _private(response: HttpResponse) -> HttpResponse:
    """Transcripts must not outlive the page view in any cache, the browser's included."""
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "same-origin"
    return response


def _choices() -> dict[str, Any]:
    return {
        # A reply names the model that wrote it, never `auto` (routing/): filtering by auto would find nothing.
        "models": ChatModel.objects.exclude(provider=AUTO).order_by("name").values_list("name", flat=True).distinct(),
        "providers": ChatModel.objects.exclude(provider=AUTO).order_by("provider").values_list("provider", flat=True).distinct(),
        "plans": Plan.objects.order_by("name"),
        "statuses": listing.PROBLEM_STATUSES,
        "sorts": listing.SORTS,
    }


@support_only
@require_GET
def console(request: HttpRequest) -> HttpResponse:
    """The list of conversations, filtered, sorted, a keyset page at a time; or, with `q`, the
    messages (and agent runs) whose text matches, inside the same filters."""
    require(request, Act.VIEW)
    query = request.GET.get("q", "").strip()[:QUERY_MAX]
    context: dict[str, Any] = {"q": query, **_choices(), "can_export": _may(request, Act.EXPORT)}
    try:
        filters = listing.parse(request.GET)
        found = _search(request, query, filters) if query else _list(request, filters)
    except listing.BadFilter as bad:
        context.update(filters=listing.Filters(), error=str(bad))
        return _private(render(request, "support/console.html", context, status=400))
    context.update(found, filters=filters, query_string=urlencode(filters.as_query()))
    return _private(render(request, "support/console.html", context))


def _list(request: HttpRequest, filters: listing.Filters) -> dict[str, Any]:
    after = request.GET.get("after", "")
    current = listing.page(filters, listing.Cursor.decode(after) if after else None)
    audit.record(
        request.user, AuditEvent.Action.LIST, conversations=[row.pk for row in current.rows],
        query=listing.describe(filters),
    )
    return {"page": current}


def _search(request: HttpRequest, query: str, filters: listing.Filters) -> dict[str, Any]:
    before = _positive(request.GET.get("before", ""))
    allowed = listing.conversations(filters).values("pk")
    found = fulltext.search(query, scope=Message.objects.filter(conversation__in=allowed), before=before)
    # Agent runs write no messages: their goals, steps and results are searched beside them.
    run_hits = [] if before is not None else fulltext.search_runs(
        query, scope=AgentRun.objects.filter(conversation__in=allowed), limit=RUN_HITS
    ).hits
    audit.record(
        request.user, AuditEvent.Action.SEARCH,
        conversations=sorted({hit.conversation_id for hit in [*found.hits, *run_hits]}),
        query=listing.describe(filters, query),
        detail={"hits": len(found.hits), "run_hits": len(run_hits), "dropped": found.dropped},
    )
    return {"search": found, "hits": _with_conversations(found.hits), "run_hits": _with_conversations(run_hits)}


def _positive(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        raise listing.BadFilter("before: a message id.")
    return int(text)


def _with_conversations(hits: list[Any]) -> list[dict[str, Any]]:
    ids = {hit.conversation_id for hit in hits}
    conversations = Conversation.objects.select_related("owner").in_bulk(ids)
    return [{"hit": hit, "conversation": conversations.get(hit.conversation_id)} for hit in hits]


def _may(request: HttpRequest, act: Act) -> bool:
    return may(request.user, act)


@support_only
@require_GET
def transcript(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = conversation_for(pk)
    require(request, Act.VIEW, conversation)
    before = request.GET.get("before", "")
    try:
        before_id = _positive(before)
    except listing.BadFilter as bad:
        return _private(HttpResponse(str(bad), status=400, content_type="text/plain"))
    shown = read(conversation, before=before_id)
    audit.record(
        request.user, AuditEvent.Action.VIEW, conversations=[conversation.pk],
        detail={"messages": [message.id for message in shown.messages]},
    )
    context = {
        "t": shown, "conversation": conversation, "error": request.GET.get("error", "")[:200],
        "can_reveal": _may(request, Act.REVEAL), "can_annotate": _may(request, Act.ANNOTATE),
        "can_export": _may(request, Act.EXPORT), "reason_min": annotations.REASON_MIN,
    }
    return _private(render(request, "support/transcript.html", context))


@support_only
@require_POST
def reveal(request: HttpRequest, pk: int, message_id: int) -> HttpResponse:
    """One message unmasked, for this page view only: the answer is a fragment the page swaps in,
    kept nowhere (no session, no cache). A reason is required and recorded."""
    conversation = conversation_for(pk)
    require(request, Act.REVEAL, conversation)
    try:
        reason = annotations.clean_reason(request.POST.get("reason", ""))
    except annotations.Refused as refused:
        return _private(render(request, "support/reveal_form.html", {
            "conversation": conversation, "message_id": message_id, "error": str(refused),
            "reason": request.POST.get("reason", "")[:500], "reason_min": annotations.REASON_MIN,
        }, status=422))
    message = revealed_message(conversation, message_id)
    audit.record(
        request.user, AuditEvent.Action.REVEAL, conversations=[conversation.pk], reason=reason,
        detail={"message": message.id},
    )
    return _private(render(request, "support/revealed.html", {"m": message}))


@support_only
@require_POST
def flag(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = conversation_for(pk)
    require(request, Act.ANNOTATE, conversation)
    try:
        made = annotations.flag(request.user, conversation, request.POST.get("reason", ""), request.POST.get("message", ""))
    except annotations.Refused as refused:
        return _back(conversation.pk, error=str(refused))
    audit.record(
        request.user, AuditEvent.Action.FLAG, conversations=[conversation.pk], reason=made.reason,
        detail={"flag": made.pk, "message": made.message_id},
    )
    return _back(conversation.pk)


@support_only
@require_POST
def clear_flag(request: HttpRequest, pk: int, flag_id: int) -> HttpResponse:
    conversation = conversation_for(pk)
    require(request, Act.ANNOTATE, conversation)
    cleared = get_object_or_404(Flag, pk=flag_id, conversation=conversation)
    annotations.clear(request.user, cleared)
    audit.record(request.user, AuditEvent.Action.FLAG, conversations=[conversation.pk], detail={"cleared": cleared.pk})
    return _back(conversation.pk)


@support_only
@require_POST
def note(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = conversation_for(pk)
    require(request, Act.ANNOTATE, conversation)
    try:
        written = annotations.note(request.user, conversation, request.POST.get("text", ""))
    except annotations.Refused as refused:
        return _back(conversation.pk, error=str(refused))
    audit.record(request.user, AuditEvent.Action.NOTE, conversations=[conversation.pk], detail={"note": written.pk})
    return _back(conversation.pk)


def _back(pk: int, error: str = "") -> HttpResponse:
    """After a change, back to the transcript (a GET, so a reload does not post it again)."""
    url = reverse("support:transcript", args=[pk])
    if error:
        url += "?" + urlencode({"error": error})
    return HttpResponseRedirect(url + "#annotations")


@support_only
@require_http_methods(["GET", "POST"])
def export_transcript(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    """One transcript as Markdown or JSON: masked; unmasked only when a reason is POSTed."""
    conversation = conversation_for(pk)
    require(request, Act.EXPORT, conversation)
    reason = ""
    if request.method == "POST":
        require(request, Act.REVEAL, conversation)
        try:
            reason = annotations.clean_reason(request.POST.get("reason", ""))
        except annotations.Refused as refused:
            return _private(HttpResponse(str(refused), status=422, content_type="text/plain"))
    response = exports.transcript(conversation, kind, revealed=bool(reason))
    audit.record(
        request.user, AuditEvent.Action.EXPORT, conversations=[conversation.pk], reason=reason,
        detail={"format": kind, "masked": not reason},
    )
    return _private(response)


@support_only
@require_http_methods(["GET", "POST"])
def export_list(request: HttpRequest) -> HttpResponse:
    """The filtered list as CSV, streamed a keyset page at a time: masked; unmasked with a reason."""
    require(request, Act.EXPORT)
    params: QueryDict = request.POST if request.method == "POST" else request.GET
    reason = ""
    try:
        filters = listing.parse(params)
        if request.method == "POST":
            require(request, Act.REVEAL)
            reason = annotations.clean_reason(params.get("reason", ""))
    except (listing.BadFilter, annotations.Refused) as bad:
        return _private(HttpResponse(str(bad), status=400, content_type="text/plain"))
    # The record names the filters, not the ids: the export may hold 100,000 conversations.
    audit.record(
        request.user, AuditEvent.Action.EXPORT, query=listing.describe(filters), reason=reason,
        detail={"format": "csv", "masked": not reason},
    )
    return _private(exports.conversation_list(filters, revealed=bool(reason)))
