"""The site-wide 404, 500 and CSRF-failure handlers: pages keep Django's, `/api/` gets the JSON
error shape (chat/responses.py), and the OpenAI-compatible gateway under `/v1/` OpenAI's own, which
its SDKs read (gateway/openai_api.py)."""

from django.http import HttpRequest, HttpResponse

from chat.responses import json_error, json_response


def _openai_error(code: str, text: str) -> HttpResponse:
    from gateway.openai_api import error_response  # the gateway's modules load only when asked

    return error_response(code, text)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/v1/"):
        return _openai_error("not_found", f"Unknown path {request.path}: the gateway has /v1/chat/completions and /v1/models.")
    if request.path.startswith("/api/"):
        return json_error("not_found")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/v1/"):
        return _openai_error("server_error", "Something went wrong on our side.")
    if request.path.startswith("/api/"):
        return json_response({"error": {"code": "server_error", "text": "Something went wrong on our side.", "retry_after": None}}, status=500)
    from django.views.defaults import server_error as default_server_error

    return default_server_error(request)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF stays on for cookie sessions (token requests are exempt); API callers get the JSON shape."""
    if request.path.startswith("/v1/"):
        return _openai_error("forbidden", "CSRF check failed: send a Parley API token as 'Authorization: Bearer <token>'.")
    if request.path.startswith("/api/"):
        return json_error("forbidden", "CSRF check failed: send the X-CSRFToken header, or use a bearer token.")
    from django.views.csrf import csrf_failure as default_failure

    return default_failure(request, reason)
