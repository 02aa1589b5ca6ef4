"""Who may do what in the support console: the one place that decides, for every support view,
export and API call.

Support staff read every user's transcripts and nothing else: the console has no door that sends,
changes or deletes a conversation. End users, signed in or not, are told nothing: the console
answers them with the site's ordinary 404."""

from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse

from chat.models import Conversation


class Act(StrEnum):
    VIEW = "view_transcripts"
    REVEAL = "reveal_personal_data"
    EXPORT = "export_transcripts"
    ANNOTATE = "annotate_transcripts"


def may(user: Any, act: Act, conversation: Conversation | None = None) -> bool:
    """May `user` do `act` (to `conversation`, when one is concerned)?

    Every act needs the console itself (reading transcripts) first. Conversations are not told
    apart today; the argument is here so that every caller asks about the one it is showing."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if not user.has_perm(f"support.{Act.VIEW}"):
        return False
    return act is Act.VIEW or user.has_perm(f"support.{act}")


def is_support(user: Any) -> bool:
    return may(user, Act.VIEW)


def support_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The console's doors answer anyone but support staff with the site's 404, so that nobody
    else learns the console exists (no log-in page, no 403)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_support(request.user):
            raise Http404("No such page.")
        return view(request, *args, **kwargs)

    return wrapped


def require(request: HttpRequest, act: Act, conversation: Conversation | None = None) -> None:
    """Inside a console view: the 404 again when this user may not do `act` here."""
    if not may(request.user, act, conversation):
        raise Http404("No such page.")
