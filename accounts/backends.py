"""The sign-in backend: Django's model backend behind the throttle (accounts/throttle.py).

Every password sign-in goes through `authenticate()`, the log-in page's and the admin's alike, so
the throttle sits here rather than in one view.
"""

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.views.decorators.debug import sensitive_variables

from accounts import throttle
from accounts.models import User


class ThrottledModelBackend(ModelBackend):
    """Refuses a locked sign-in before the password is checked, and counts wrong passwords.

    A refused or failed attempt raises PermissionDenied, which ends `authenticate()` there: Django's
    own ModelBackend stays listed after this one only so that sessions made before it keep working,
    and must never check a password a second time. Calls without a request (scripts, the shell) have
    no address to count by and are not throttled.
    """

    @sensitive_variables("password")
    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> User | None:
        if username is None:
            username = kwargs.get(User.USERNAME_FIELD)
        if request is None or username is None or password is None:
            user = super().authenticate(request, username, password, **kwargs)
            if user is None and username is not None and password is not None:
                raise PermissionDenied
            return user
        refusal = throttle.refusal_before_check(request, username)
        if refusal is None:
            user = super().authenticate(request, username, password, **kwargs)
            if user is not None:
                throttle.count_success(request, username)
                return user
            refusal = throttle.count_failure(request, username)
        if refusal is not None:
            setattr(request, throttle.REFUSAL_ATTRIBUTE, refusal)
        raise PermissionDenied

    @sensitive_variables("password")
    async def aauthenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> User | None:
        # ModelBackend's own async version would skip the throttle.
        return await sync_to_async(self.authenticate)(request, username, password, **kwargs)
