"""A token revoked, or expiring, in one web process is refused by every other at once: two live
daphne processes, the token in use on B while its owner revokes it on A's tokens page. The chat
sockets it opened on either are closed (4401) within a second."""

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
import websockets
from django.utils import timezone

from accounts.models import ApiToken

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@dataclass(frozen=True)
class Use:
    started: float  # time.time(), comparable with the database's clock on this one machine
    status: int


class Hammer:
    """Uses a token on one process, request after request, in a thread, recording each answer."""

    def __init__(self, url: str, raw: str) -> None:
        self.url, self.raw = url, raw
        self.uses: list[Use] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self.raw}"}, timeout=10) as client:
            while not self.stop.is_set():
                started = time.time()
                self.uses.append(Use(started, client.get(f"{self.url}/api/conversations/").status_code))

    def __enter__(self) -> "Hammer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)


def wait_until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)


def signed_in(url: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=10)
    page = client.get("/accounts/login/").text
    csrf = page.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    response = client.post("/accounts/login/", data={"username": username, "password": password, "csrfmiddlewaretoken": csrf})
    assert response.status_code == 302, response.text
    return client


def socket_refused(url: str, raw: str) -> int | None:
    async def run() -> int | None:
        async with websockets.connect(url.replace("http", "ws") + "/ws/chat/",
                                      additional_headers={"Authorization": f"Bearer {raw}"}) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 1)
            except TimeoutError:
                return None
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else 1006
        return None

    return asyncio.run(run())


class OpenSocket:
    """A chat socket held open in a thread with its own event loop, noting how it ended."""

    def __init__(self, url: str, raw: str) -> None:
        self.url, self.raw = url.replace("http", "ws") + "/ws/chat/", raw
        self.opened = threading.Event()
        self.closed_code: int | None = None
        self.closed = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the socket did not open"

    async def _run(self) -> None:
        async with websockets.connect(self.url, additional_headers={"Authorization": f"Bearer {self.raw}"}) as ws:
            self.opened.set()
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
            except websockets.ConnectionClosed as closed:
                self.closed_code = closed.rcvd.code if closed.rcvd else 1006
            except TimeoutError:
                pass
            self.closed.set()

    def wait_closed(self) -> int | None:
        assert self.closed.wait(10), "the socket stayed open"
        return self.closed_code


@pytest.fixture
def two_processes(live_factory):
    app = live_factory()
    first, second = app.start_daphne(), app.start_daphne()
    return first.url, second.url


def test_a_token_revoked_on_one_process_is_refused_by_another_at_once(two_processes, alice):
    a, b = two_processes
    token, raw = ApiToken.issue(alice, "script", scopes=["chat"])
    browser = signed_in(a, "alice", "alice-password-123")
    page = browser.get("/accounts/tokens/").text
    assert "script" in page
    csrf = page.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    sockets = [OpenSocket(a, raw), OpenSocket(b, raw)]
    with httpx.Client(headers={"Authorization": f"Bearer {raw}"}) as script, Hammer(b, raw) as hammer:
        assert script.get(f"{b}/api/conversations/").status_code == 200
        assert not any(socket.closed.is_set() for socket in sockets)
        wait_until(lambda: len(hammer.uses) >= 5)
        revoked = browser.post(f"/accounts/tokens/{token.pk}/revoke/", data={"csrfmiddlewaretoken": csrf})
        done = time.time()
        assert revoked.status_code == 302
        refused = script.get(f"{b}/api/conversations/")  # the very next request on B
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "not_authenticated"
        wait_until(lambda: any(use.started > done for use in hammer.uses))
    assert [socket.wait_closed() for socket in sockets] == [4401, 4401]
    assert socket_refused(b, raw) == 4401
    assert hammer.uses[0].status == 200
    assert {use.status for use in hammer.uses if use.started > done} == {401}


def test_a_token_expiring_is_refused_by_every_process_from_that_moment(two_processes, alice):
    a, b = two_processes
    expires = timezone.now() + timedelta(seconds=2)
    token, raw = ApiToken.issue(alice, "short", scopes=["chat"], expires=expires)
    socket = OpenSocket(b, raw)
    with Hammer(a, raw) as on_a, Hammer(b, raw) as on_b:
        wait_until(lambda: all(hammer.uses and hammer.uses[-1].started > expires.timestamp() + 0.5 for hammer in (on_a, on_b)))
    for hammer in (on_a, on_b):
        assert {use.status for use in hammer.uses if use.started < expires.timestamp() - 1} == {200}
        assert {use.status for use in hammer.uses if use.started > expires.timestamp()} == {401}
    assert socket.wait_closed() == 4401
    assert socket_refused(b, raw) == 4401
    token.refresh_from_db()
    assert token.revoked is None and not token.is_live
