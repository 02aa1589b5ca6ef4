"""Share links as their owner makes, lists and revokes them, and the one lookup the public page uses."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from chat.actions import ActionError, get_conversation_for, parse_pk
from sharing import snapshot
from sharing.models import SharedLink

RATE_WINDOW = timedelta(hours=1)


def create_link(user: User, conversation_id: object, show_owner: object = False) -> SharedLink:
    """A new link to the conversation as it is now; the owner is named only when `show_owner`."""
    if not isinstance(show_owner, bool):
        raise ActionError("invalid_input", "show_owner must be true or false.")
    with transaction.atomic():
        # The user's row serializes their creations, so two at once cannot both pass the checks.
        User.objects.select_for_update().filter(pk=user.pk).first()
        conversation = get_conversation_for(user, conversation_id)
        _check_room(user)
        return SharedLink.objects.create(
            conversation=conversation,
            owner=user,
            title=conversation.display_title,
            snapshot=snapshot.take_snapshot(conversation),
            show_owner=show_owner,
            owner_name=snapshot.owner_name(user) if show_owner else "",
        )


def _check_room(user: User) -> None:
    links = SharedLink.objects.filter(owner=user)
    if links.active().count() >= settings.PARLEY_SHARES_MAX_ACTIVE:
        raise ActionError(
            "too_many_shares", f"You have {settings.PARLEY_SHARES_MAX_ACTIVE} share links. Revoke one to make another."
        )
    since = timezone.now() - RATE_WINDOW
    recent = list(links.filter(created__gte=since).order_by("created").values_list("created", flat=True))
    if len(recent) >= settings.PARLEY_SHARES_PER_HOUR:
        # The oldest of the hour's links leaves the window first.
        wait = (recent[-settings.PARLEY_SHARES_PER_HOUR] + RATE_WINDOW - timezone.now()).total_seconds()
        raise ActionError("too_many_shares", "You have made many share links in the last hour.", retry_after=max(1.0, wait))


def links_of(user: User, conversation_id: object | None = None) -> list[SharedLink]:
    """The user's links not yet revoked, newest first; of one conversation of theirs when given."""
    links = SharedLink.objects.active().filter(owner=user)
    if conversation_id is not None:
        links = links.filter(conversation=get_conversation_for(user, conversation_id))
    return list(links)


def revoke_link(user: User, link_id: object) -> None:
    """Revokes one of the user's links; anyone else's, a revoked one or an unknown id is not found."""
    link = SharedLink.objects.active().filter(pk=parse_pk(link_id), owner=user).first()
    if link is None:
        raise ActionError("not_found")
    link.revoke()


def shared(token: str) -> SharedLink | None:
    """The link a visitor holds, if it exists and is not revoked."""
    if not token or len(token) > 64:
        return None
    return SharedLink.objects.active().filter(token=token).first()
