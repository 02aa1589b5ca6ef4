"""docker/Caddyfile for real: Caddy on this machine in front of two real daphne processes. Server-
Sent Events arrive as they are written, WebSockets pass, requests alternate between the two web
processes with nothing sticky, upstreams are health-checked as the site, and the forwarded scheme
and client address are the proxy's to set."""

import asyncio
import json
import os
import signal
import subprocess
import time

import httpx
import pytest
import websockets
from django.urls import Resolver404, resolve

from accounts.models import ApiToken
from chat.models import Message
from tests.deployment import CADDYFILE, required_binary
from tests.live import LiveApp, free_port

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SITE = "localhost"
STATIC_PATH = "/static/css/parley.css"


def health_uri() -> str:
    """/healthz once the endpoint exists; until then a page every web process answers with 200."""
    try:
        resolve("/healthz")
    except Resolver404:
        return "/accounts/login/"
    return "/healthz"


class Caddy:
    def __init__(self, app: LiveApp, upstreams: list[str], domain: str = SITE) -> None:
        self.port = free_port()
        self.log_path = app.tmp / f"caddy-{self.port}.log"
        env = dict(
            os.environ,
            XDG_DATA_HOME=str(app.tmp / "caddy-data"),
            XDG_CONFIG_HOME=str(app.tmp / "caddy-config"),
            PARLEY_SITE_ADDRESS=f"http://{SITE}:{self.port}",
            PARLEY_DOMAIN=domain,
            PARLEY_UPSTREAMS=" ".join(upstreams),
            PARLEY_HEALTH_URI=health_uri(),
            PARLEY_CADDY_ADMIN="off",
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [required_binary("caddy"), "run", "--adapter", "caddyfile", "--config", str(CADDYFILE)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.url = f"http://{SITE}:{self.port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                httpx.get(self.url + STATIC_PATH, timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"Caddy did not answer on {self.port}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def site(live_factory):
    """Two daphne processes that answer only to the site's name, HSTS on for HTTPS requests, and
    Caddy in front of them."""
    app = live_factory(
        ALLOWED_HOSTS=SITE, BEHIND_TLS_PROXY="1", PARLEY_TRUSTED_PROXIES="1", SECURE_HSTS_SECONDS="3600"
    )
    servers = [app.start_daphne(), app.start_daphne()]
    started: list[Caddy] = []

    def proxy(domain: str = SITE) -> Caddy:
        checks_before = [access_lines(server, health_uri()) for server in servers]
        caddy = Caddy(app, [f"127.0.0.1:{server.port}" for server in servers], domain)
        started.append(caddy)
        # Caddy checks every upstream as it starts: the tests begin once both have been asked.
        deadline = time.monotonic() + 10
        while any(access_lines(s, health_uri()) <= seen for s, seen in zip(servers, checks_before, strict=True)):
            assert time.monotonic() < deadline, f"no health check reached the web processes:\n{caddy.log()}"
            time.sleep(0.1)
        return caddy

    yield app, servers, proxy
    for caddy in started:
        caddy.stop()


def access_lines(server, path: str) -> int:
    """Requests for `path` in a daphne's access log (it logs the path without its query)."""
    return server.log_path.read_text(errors="replace").count(f'"GET {path}"')


def settled_access_lines(server, path: str) -> int:
    """access_lines once the count stops growing: a daphne logs a request just after answering it,
    so a request answered a moment ago (Caddy's first, say) may not be counted yet."""
    previous, count = -1, access_lines(server, path)
    while count != previous:
        time.sleep(0.3)
        previous, count = count, access_lines(server, path)
    return count


def test_requests_alternate_between_the_two_web_processes_with_nothing_sticky(site):
    app, servers, proxy = site
    caddy = proxy()
    for server in servers:  # both passed the health check asked under the site's name
        assert f'"GET {health_uri()}" 200' in server.log_path.read_text(errors="replace")
    before = [settled_access_lines(server, STATIC_PATH) for server in servers]
    # One client, one kept-alive connection, a session cookie: none of it pins a web process.
    with httpx.Client(base_url=caddy.url, cookies={"sessionid": "one-session"}) as client:
        for _ in range(6):
            assert client.get(STATIC_PATH).status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        counts = [access_lines(server, STATIC_PATH) - seen for server, seen in zip(servers, before, strict=True)]
        if sum(counts) >= 6:
            break
        time.sleep(0.1)
    assert counts == [3, 3], (counts, caddy.log())


def test_server_sent_events_arrive_while_the_reply_is_still_being_written(site, alice):
    app, servers, proxy = site
    caddy = proxy()
    token = ApiToken.issue(alice, "proxy")[1]
    headers = {"Authorization": f"Bearer {token}"}
    conversation = httpx.post(f"{caddy.url}/api/conversations/", json={}, headers=headers).json()["id"]
    created = httpx.post(
        f"{caddy.url}/api/conversations/{conversation}/messages", json={"content": "slowly /words 30 /slow 150"}, headers=headers
    )
    assert created.status_code == 201, created.text
    reply_id = created.json()["assistant_message"]["id"]
    first_delta_at = done_at = None
    with httpx.stream("GET", f"{caddy.url}/api/messages/{reply_id}/events", headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "event: delta" and first_delta_at is None:
                first_delta_at = time.monotonic()
                # The reply is still being written when its first words reach the client.
                assert Message.objects.get(pk=reply_id).status in Message.ACTIVE
            if line == "event: done":
                done_at = time.monotonic()
                break
    assert first_delta_at is not None and done_at is not None
    assert done_at - first_delta_at > 2.0  # 30 words at 150 ms each arrive spread out, not in one lump
    assert Message.objects.get(pk=reply_id).status == "complete"


def test_a_websocket_works_through_the_proxy(site, alice):
    app, servers, proxy = site
    caddy = proxy()
    token = ApiToken.issue(alice, "proxy-ws")[1]

    async def scenario() -> tuple[dict, str, dict]:
        url = caddy.url.replace("http", "ws") + "/ws/chat/"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send(json.dumps({"type": "send", "conversation": None, "content": "through the proxy /words 20"}))
            created = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert created["type"] == "message", created
            text = []
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if event.get("message") != created["assistant_message"]["id"]:
                    continue
                if event["type"] == "delta":
                    text.append(event["text"])
                elif event["type"] in {"done", "error"}:
                    return created, "".join(text), event

    created, text, final = asyncio.run(scenario())
    assert final["type"] == "done" and final["status"] == "complete"
    assert len(text.split()) == 20
    assert Message.objects.get(pk=created["assistant_message"]["id"]).content == text


def test_the_proxy_sets_the_forwarded_scheme_itself(site):
    app, servers, proxy = site
    caddy = proxy()
    spoofed = {"X-Forwarded-Proto": "https"}
    # Straight to daphne, the claim would be believed (BEHIND_TLS_PROXY=1): HSTS is sent ...
    direct = httpx.get(f"{servers[0].url}/accounts/login/", headers={**spoofed, "Host": SITE})
    assert "strict-transport-security" in direct.headers
    # ... through Caddy, the client's claim is replaced by the scheme it really used: plain HTTP.
    proxied = httpx.get(f"{caddy.url}/accounts/login/", headers=spoofed)
    assert proxied.status_code == 200
    assert "strict-transport-security" not in proxied.headers
    assert "server" not in proxied.headers


def test_web_processes_that_fail_their_health_check_get_no_requests(site):
    app, servers, proxy = site
    caddy = proxy()
    hung, healthy = servers
    # A web process that stops answering (stopped, not dead: its socket still accepts) fails its
    # health check by timing out; then every request goes to the other one.
    before = settled_access_lines(healthy, STATIC_PATH)
    os.kill(hung.process.pid, signal.SIGSTOP)
    try:
        answered = quick_in_a_row = 0
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=caddy.url) as client:
            # Until the check fails, every other request waits on the stopped process and times out.
            while quick_in_a_row < 6:
                assert time.monotonic() < deadline, f"the stopped process kept getting requests:\n{caddy.log()}"
                try:
                    ok = client.get(STATIC_PATH, timeout=2).status_code == 200
                except httpx.TimeoutException:
                    ok = False
                answered += ok
                quick_in_a_row = quick_in_a_row + 1 if ok else 0
            for _ in range(6):  # then none does: a request sent to it would time out here
                assert client.get(STATIC_PATH, timeout=2).status_code == 200
                answered += 1
        deadline = time.monotonic() + 5
        while access_lines(healthy, STATIC_PATH) - before < answered and time.monotonic() < deadline:
            time.sleep(0.1)
        assert access_lines(healthy, STATIC_PATH) - before == answered, caddy.log()  # each answer came from it
    finally:
        os.kill(hung.process.pid, signal.SIGCONT)


def sign_in_addresses(app: LiveApp) -> str:
    """The sign-in throttle's Redis keys, which name the address each failure was counted for."""
    import redis

    prefix = app.env.get("PARLEY_KEY_PREFIX", "parley")
    client = redis.Redis.from_url(app.env["REDIS_URL"])
    try:
        return " ".join(key.decode() for key in client.scan_iter(f"{prefix}:auth:*"))
    finally:
        client.close()


def fail_a_sign_in(base_url: str, **headers: str) -> None:
    with httpx.Client(base_url=base_url, headers=headers) as client:
        client.get("/accounts/login/")
        refused = client.post(
            "/accounts/login/",
            data={"username": "nobody", "password": "wrong-password", "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        )
        assert refused.status_code == 200, refused.text[:500]  # the form again, with its error (CSRF refusals are 403)


def test_the_proxy_puts_the_client_alone_in_x_forwarded_for(site):
    app, servers, proxy = site
    caddy = proxy()
    # Straight to daphne, a forged header would be believed (PARLEY_TRUSTED_PROXIES=1) ...
    fail_a_sign_in(servers[0].url, Host=SITE, **{"X-Forwarded-For": "198.51.100.7"})
    assert "198.51.100.7" in sign_in_addresses(app)
    # ... through Caddy, the forged address is dropped and the client's own is counted.
    fail_a_sign_in(caddy.url, **{"X-Forwarded-For": "203.0.113.9"})
    counted = sign_in_addresses(app)
    assert "203.0.113.9" not in counted
    assert "127.0.0.1" in counted or "::" in counted, counted
