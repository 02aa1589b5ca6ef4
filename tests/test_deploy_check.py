"""`manage.py check --deploy` sees Parley's middleware: silent with the README's production settings,
and still warning about what is really missing."""

import inspect
import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

from parley.checks import PREDICATES
from tests.live import ROOT

# The Deployment section of README.md, behind a TLS proxy at chat.example.com.
PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "PARLEY_REQUIRE_SECRET_KEY": "1",
    "DEBUG": "0",
    "ALLOWED_HOSTS": "chat.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
    "PARLEY_PUBLIC_URL": "https://chat.example.com",
    "BEHIND_TLS_PROXY": "1",
    "SECURE_COOKIES": "1",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
    "EMAIL_HOST": "smtp.example.com",
    "EMAIL_PORT": "587",
    "EMAIL_HOST_USER": "parley",
    "EMAIL_HOST_PASSWORD": "smtp-password",
    "EMAIL_USE_TLS": "1",
    "DEFAULT_FROM_EMAIL": "parley@chat.example.com",
}


def check_deploy(**changes: str | None) -> subprocess.CompletedProcess[str]:
    """The check in a process of its own, since settings are read from the environment once."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SECURE_", "EMAIL_"))}
    env.update(PRODUCTION, DJANGO_SETTINGS_MODULE="parley.settings")  # DATABASE_URL, REDIS_URL: the tests'
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def deploy_issue_ids() -> set[str]:
    return {issue.id for issue in run_checks(include_deployment_checks=True, tags=["security"])}


def without(path: str) -> list[str]:
    assert path in settings.MIDDLEWARE
    return [entry for entry in settings.MIDDLEWARE if entry != path]


def test_the_production_settings_pass_the_deploy_check_with_nothing_silenced():
    result = check_deploy()
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout, result.stdout + result.stderr


def test_the_deploy_check_still_warns_without_hsts():
    result = check_deploy(SECURE_HSTS_SECONDS=None)
    assert "security.W004" in result.stdout + result.stderr


def test_the_deploy_check_still_warns_about_insecure_cookies_and_no_redirect():
    result = check_deploy(SECURE_COOKIES=None, SECURE_SSL_REDIRECT=None)
    for warning in ("security.W008", "security.W012", "security.W016"):
        assert warning in result.stdout + result.stderr


def test_the_deploy_check_refuses_the_console_mail_backend():
    result = check_deploy(EMAIL_BACKEND=None)
    assert result.returncode != 0
    assert "mail.E001" in result.stdout + result.stderr


def test_the_predicates_parley_widens_are_still_the_ones_django_asks():
    for module, name, _ in PREDICATES:
        assert f"{name}()" in inspect.getsource(module), f"{module.__name__} no longer asks {name}()"


@pytest.mark.parametrize(
    ("removed", "warning"),
    [
        ("parley.middleware.SecurityMiddleware", "security.W001"),
        ("parley.middleware.XFrameOptionsMiddleware", "security.W002"),
        ("parley.middleware.CsrfViewMiddleware", "security.W003"),
    ],
)
def test_a_missing_security_middleware_is_still_reported(removed, warning):
    assert warning not in deploy_issue_ids()
    with override_settings(MIDDLEWARE=without(removed)):
        assert warning in deploy_issue_ids()


def test_the_stock_middleware_still_counts():
    stock = ["django.middleware.security.SecurityMiddleware", *without("parley.middleware.SecurityMiddleware")]
    with override_settings(MIDDLEWARE=stock):
        assert "security.W001" not in deploy_issue_ids()


def test_hsts_is_checked_once_the_security_middleware_is_seen():
    with override_settings(SECURE_HSTS_SECONDS=0):
        assert "security.W004" in deploy_issue_ids()
    with override_settings(SECURE_HSTS_SECONDS=3600, SECURE_HSTS_INCLUDE_SUBDOMAINS=False):
        assert "security.W005" in deploy_issue_ids()
