"""Which tokens' open sockets are closed: revoked, expired, deleted, or their user deactivated."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiToken
from accounts.token_sockets import dead_tokens

pytestmark = pytest.mark.django_db


def test_only_tokens_that_still_open_the_socket_are_kept(alice, bob):
    live = ApiToken.issue(alice, "live", expires=timezone.now() + timedelta(hours=1))[0]
    revoked = ApiToken.issue(alice, "revoked")[0]
    revoked.revoke()
    expired = ApiToken.issue(alice, "expired")[0]
    ApiToken.objects.filter(pk=expired.pk).update(expires=timezone.now())
    deleted = ApiToken.issue(alice, "deleted")[0]
    deleted_id = deleted.pk
    deleted.delete()
    bobs = ApiToken.issue(bob, "bob's")[0]
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    assert dead_tokens({live.pk, revoked.pk, expired.pk, deleted_id, bobs.pk}) == {revoked.pk, expired.pk, deleted_id, bobs.pk}
