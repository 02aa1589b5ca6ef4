"""The public page of a share link: anyone holding the token reads the snapshot, nothing else."""

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from sharing import actions


@require_GET
def shared(request: HttpRequest, token: str) -> HttpResponse:
    link = actions.shared(token)
    if link is None:
        raise Http404("No such link.")  # unknown and revoked alike: the site's own 404
    messages = link.snapshot.get("messages", [])
    context = {
        "title": link.title,
        "owner_name": link.owner_name if link.show_owner else "",
        "shared_on": link.created,
        "shared_messages": messages,
        "left_out": link.snapshot.get("left_out", 0),
    }
    response = render(request, "sharing/shared.html", context)
    # Links are passed around, not published: no search engine should list them, no page they
    # link to should learn the token from a Referer, and a revoked link must not live on in a cache.
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "no-store"
    return response
