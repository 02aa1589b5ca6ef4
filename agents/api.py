"""The HTTP doors of agent runs: start, read, follow (SSE), cancel, decide, download. Same
authentication, errors and access rules as the chat API (chat/responses.py)."""

from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from agents import actions
from agents.attach import attach_run
from chat.responses import api_view, json_response, read_json
from chat.sse import requested_cursor, sse_response
from streaming import process
from streaming.keys import run_owner_key
from streaming.writer import RUN_OWNER_SECONDS


@api_view({"GET", "POST"})
async def conversation_runs(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    if request.method == "GET":
        return json_response({"runs": await database_sync_to_async(actions.runs_of_conversation)(user, pk)})
    data = read_json(request)
    detail = await database_sync_to_async(_start)(user, pk, data.get("goal"), data.get("model"))
    # Before the answer, so the client's attach finds it (start_run also sets it, after the commit,
    # on a thread that a burst of starts keeps busy): an attach without it asks the database.
    await process.event_log().redis.set(run_owner_key(detail["id"]), user.pk, ex=RUN_OWNER_SECONDS, nx=True)
    return json_response({"run": detail}, status=201)


def _start(user: Any, pk: int, goal: object, model: object) -> dict[str, Any]:
    return actions.run_detail(actions.start_run(user, pk, goal, model))


@api_view({"GET"})
def run_detail(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    return json_response({"run": actions.run_detail(actions.get_run_for(user, pk))})


@api_view({"GET"})
async def run_events(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    after = requested_cursor(request, "0-0", example="12-0")
    return await sse_response(attach_run(user, pk, after, idle=settings.PARLEY_SSE_KEEPALIVE_SECONDS))


@api_view({"POST"})
def run_cancel(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    read_json(request)  # an empty body, or JSON: anything else is refused like everywhere else
    return json_response({"run": actions.cancel_run(user, pk).as_dict()}, status=202)


@api_view({"POST"})
def run_approval(request: HttpRequest, user: Any, pk: int, step: int) -> HttpResponse:
    data = read_json(request)
    decided = actions.decide(user, pk, step, data.get("decision"), data.get("note", ""))
    return json_response({"step": decided.as_dict()})


@api_view({"GET"})
def run_artifact(request: HttpRequest, user: Any, pk: int, name: str) -> HttpResponse:
    artifact = actions.artifact_for(user, pk, name)
    response = HttpResponse(artifact.content.encode(), content_type=f"{artifact.content_type}; charset=utf-8")
    # A download, never a page: a report is the model's text, and must not run in Parley's origin.
    response["Content-Disposition"] = f'attachment; filename="{artifact.name}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


