"""Which pages may open a signed-in user's WebSocket, through real daphne: the site's own origin
(scheme, host and port) and CSRF_TRUSTED_ORIGINS, nothing else of the same host."""

import asyncio
import json

import pytest
import websockets
from django.test import Client

from tests.live import free_port

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

# A refused origin is accepted and closed at once with 4403, so that the client learns why.
REFUSED = {4403}


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def handshake(url: str, origin: str, cookie: str, headers: dict | None = None) -> int | None:
    """None when the socket opened and answered a frame as the user's; the close code otherwise."""
    try:
        ws = await websockets.connect(url, origin=origin, additional_headers={"Cookie": cookie, **(headers or {})})
    except websockets.exceptions.InvalidStatus as refused:
        return refused.response.status_code
    try:
        await ws.send(json.dumps({"type": "attach", "message": 999999, "after": ""}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert answer["code"] == "not_found"
        return None
    except websockets.exceptions.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else -1
    finally:
        await ws.close()


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws/chat/"


def test_only_the_sites_own_origin_opens_a_cookie_socket(live_app, alice):
    cookie, port = session_cookie(alice), live_app.servers[0].port
    other = free_port()
    refused = [
        f"http://127.0.0.1:{other}",  # another port of the same host
        f"https://127.0.0.1:{port}",  # another scheme
        "https://127.0.0.1",
        "http://127.0.0.1",
        "http://localhost:9",
        f"http://localhost:{port}",  # the host name differs from the one the socket was opened on
        f"http://127.0.0.1:{port}.evil.example",
        "null",
    ]
    results = {origin: asyncio.run(handshake(ws_url(live_app.url), origin, cookie)) for origin in refused}
    assert {origin: code for origin, code in results.items() if code not in REFUSED | {400}} == {}
    assert asyncio.run(handshake(ws_url(live_app.url), f"http://127.0.0.1:{port}", cookie)) is None
    # The same page on the other host name the site answers to, opening that host's socket.
    assert asyncio.run(handshake(f"ws://localhost:{port}/ws/chat/", f"http://localhost:{port}", cookie)) is None


def test_trusted_origins_and_a_tls_proxy_are_honoured(live_factory, alice):
    app = live_factory(CSRF_TRUSTED_ORIGINS="https://chat.example.com,https://*.corp.example", BEHIND_TLS_PROXY="1")
    server = app.start_daphne()
    cookie, url = session_cookie(alice), ws_url(server.url)
    proxied = {"X-Forwarded-Proto": "https"}
    assert asyncio.run(handshake(url, "https://chat.example.com", cookie)) is None
    assert asyncio.run(handshake(url, "https://team.corp.example", cookie)) is None
    assert asyncio.run(handshake(url, "http://chat.example.com", cookie)) in REFUSED
    assert asyncio.run(handshake(url, "https://evil.example", cookie)) in REFUSED
    # Behind the TLS proxy the site's own origin is https; the plain-http one is another origin.
    assert asyncio.run(handshake(url, f"https://127.0.0.1:{server.port}", cookie, proxied)) is None
    assert asyncio.run(handshake(url, f"http://127.0.0.1:{server.port}", cookie, proxied)) in REFUSED


def test_a_signed_out_handshake_is_closed_with_4401_that_the_client_sees(live_app):
    port = live_app.servers[0].port
    # A browser-like handshake from the site's own page, without a session; and a script with a bad token.
    assert asyncio.run(handshake(ws_url(live_app.url), f"http://127.0.0.1:{port}", "sessionid=expired")) == 4401
    assert asyncio.run(handshake(ws_url(live_app.url), None, "", {"Authorization": "Bearer not-a-token"})) == 4401
