"""What real daphne sends: the wrapped middleware's headers and CSRF refusals, the Content-Security-
Policy and Permissions-Policy, HSTS behind a TLS proxy only when configured, and no Server banner."""

import asyncio
import re

import httpx
import pytest
import websockets

from accounts.models import ApiToken

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

HTTPS_PROXY = {"X-Forwarded-Proto": "https"}


def csp_directives(header: str) -> dict[str, str]:
    return dict(part.strip().partition(" ")[::2] for part in header.split(";"))


def test_pages_carry_the_security_headers_over_daphne(live_app):
    response = httpx.get(f"{live_app.url}/accounts/login/")
    assert response.status_code == 200
    headers = response.headers
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert {"camera=()", "microphone=()", "geolocation=()", "payment=()", "usb=()"} <= set(
        headers["permissions-policy"].split(", ")
    )


def test_the_content_security_policy_allows_this_origin_only_and_no_inline_code(live_app):
    header = httpx.get(f"{live_app.url}/accounts/login/").headers["content-security-policy"]
    assert "unsafe-inline" not in header and "unsafe-eval" not in header
    assert csp_directives(header) == {
        "default-src": "'self'",
        "script-src": "'self'",  # no template of this page asked for a nonce
        "style-src": "'self'",
        "img-src": "'self'",
        "connect-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'self'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }


def test_a_template_that_asks_for_a_nonce_gets_it_in_the_policy(live_app):
    # The admin's login page puts the nonce on its stylesheet links.
    response = httpx.get(f"{live_app.url}/admin/login/")
    directives = csp_directives(response.headers["content-security-policy"])
    nonce = re.fullmatch(r"'self' 'nonce-([\w-]+)'", directives["script-src"]).group(1)
    assert directives["style-src"] == f"'self' 'nonce-{nonce}'"
    assert f'nonce="{nonce}"' in response.text


def test_a_cookie_session_post_without_the_csrf_token_is_refused_over_daphne(live_app, alice):
    with httpx.Client(base_url=live_app.url) as client:
        form = client.get("/accounts/login/")
        token = form.cookies["csrftoken"]
        credentials = {"username": "alice", "password": "alice-password-123"}
        refused = client.post("/accounts/login/", data=credentials)
        assert refused.status_code == 403
        accepted = client.post("/accounts/login/", data={**credentials, "csrfmiddlewaretoken": token})
        assert accepted.status_code == 302, accepted.text[:500]


def test_no_server_banner_on_http_or_the_websocket_handshake(live_app, alice):
    assert "server" not in httpx.get(f"{live_app.url}/accounts/login/").headers
    assert "server" not in httpx.get(f"{live_app.url}/static/css/parley.css").headers
    token = ApiToken.issue(alice, "handshake")[1]

    async def handshake_headers() -> websockets.Headers:
        url = live_app.url.replace("http", "ws") + "/ws/chat/"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            return ws.response.headers

    headers = asyncio.run(handshake_headers())
    assert "server" not in headers, headers


def test_hsts_is_off_by_default(live_app):
    assert "strict-transport-security" not in httpx.get(f"{live_app.url}/accounts/login/", headers=HTTPS_PROXY).headers


def test_behind_a_tls_proxy_https_requests_get_hsts_and_plain_ones_a_redirect(live_factory):
    app = live_factory(
        BEHIND_TLS_PROXY="1", SECURE_HSTS_SECONDS="3600", SECURE_HSTS_INCLUDE_SUBDOMAINS="1", SECURE_SSL_REDIRECT="1"
    )
    server = app.start_daphne()
    secure = httpx.get(f"{server.url}/accounts/login/", headers=HTTPS_PROXY)
    assert secure.status_code == 200
    assert secure.headers["strict-transport-security"] == "max-age=3600; includeSubDomains"
    plain = httpx.get(f"{server.url}/accounts/login/?next=/")
    assert plain.status_code == 301
    assert plain.headers["location"] == f"https://127.0.0.1:{server.port}/accounts/login/?next=/"
    assert "strict-transport-security" not in plain.headers
