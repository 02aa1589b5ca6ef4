"""Django's security checks, made to see Parley's middleware.

Parley lists subclasses of Django's security, clickjacking, CSRF, session and CSP middleware
(parley/middleware.py), while Django's security checks look for the stock classes' dotted paths in
MIDDLEWARE. Left alone, `check --deploy` warns that the security headers, X-Frame-Options and CSRF
protection are missing (security.W001-W003) although they are sent and enforced, and, taking
SecurityMiddleware for absent, it skips its checks of HSTS, the SSL redirect, nosniff and the
referrer and opener policies, which would hide a real gap. Silencing W001-W003 would not bring those
back: each of them asks the same predicate again. So the predicates accept a subclass, as Django's
own admin and auth checks already do; every check then runs unchanged against the middleware that
really runs, and none is silenced. tests/test_deploy_check.py fails if Django renames them.
"""

from functools import partial

from django.apps import AppConfig
from django.conf import settings
from django.core.checks.security import base, csrf, sessions
from django.utils.module_loading import import_string

# Each check module's predicate, and the stock middleware it looks for.
PREDICATES = [
    (base, "_security_middleware", "django.middleware.security.SecurityMiddleware"),
    (base, "_xframe_middleware", "django.middleware.clickjacking.XFrameOptionsMiddleware"),
    (base, "_csp_middleware", "django.middleware.csp.ContentSecurityPolicyMiddleware"),
    (csrf, "_csrf_middleware", "django.middleware.csrf.CsrfViewMiddleware"),
    (sessions, "_session_middleware", "django.contrib.sessions.middleware.SessionMiddleware"),
]


def installed(stock_path: str) -> bool:
    """Whether MIDDLEWARE lists the stock middleware or a subclass of it."""
    stock = import_string(stock_path)
    for path in settings.MIDDLEWARE:
        try:
            middleware = import_string(path)
        except ImportError:  # the handler fails on it at start-up; not this check's to report
            continue
        if isinstance(middleware, type) and issubclass(middleware, stock):
            return True
    return False


def see_subclasses() -> None:
    for module, name, stock_path in PREDICATES:
        setattr(module, name, partial(installed, stock_path))


class ChecksConfig(AppConfig):
    """In INSTALLED_APPS so that the predicates accept subclasses from start-up, before any check runs."""

    name = "parley"

    def ready(self) -> None:
        see_subclasses()
