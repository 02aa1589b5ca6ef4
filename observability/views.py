"""The probe doors: `/healthz`, `/readyz` and `/metrics`. They reach these views through
observability/middleware.py, ahead of sessions, CSRF, sign-in and host checks."""

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse

from observability import access, health, metrics

NO_STORE = {"Cache-Control": "no-store"}


async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and its event loop answers: nothing else is asked."""
    return JsonResponse({"status": "ok"}, headers=NO_STORE)


async def readyz(request: HttpRequest) -> JsonResponse:
    """200 when every check passed, else 503; each check with its time in ms (and its error)."""
    ready, checks = await health.readiness()
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503, headers=NO_STORE)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    if not access.may_read_metrics(request):
        return JsonResponse(
            {"error": {"code": "forbidden", "message": "Metrics are served to loopback, PARLEY_METRICS_ALLOW and PARLEY_METRICS_TOKEN only."}},
            status=403, headers=NO_STORE,
        )
    # Merging the processes' files and reading the breakers and runs blocks: on the shared thread.
    body = await sync_to_async(metrics.render)()
    return HttpResponse(body, content_type="text/plain; version=0.0.4; charset=utf-8", headers=NO_STORE)
