"""A tab whose session has ended says so instead of reconnecting forever: the server closes its
socket with 4401 after accepting it, which a browser can see (a refused handshake reads as 1006)."""

import pytest

from tests.browser.conftest import log_in, watch_policies

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_a_tab_whose_session_ended_shows_signed_out(browser, live_factory, user):
    app = live_factory()
    server = app.start_daphne()
    context = browser.new_context(base_url=server.url)
    context.set_default_timeout(15_000)
    violations = watch_policies(context)
    page = context.new_page()
    attempts: list[str] = []
    page.on("websocket", lambda ws: attempts.append(ws.url))
    log_in(page, user.username)
    page.wait_for_selector("#connection[data-status=open]", state="attached")
    server.stop()  # the socket drops; the page keeps trying
    page.wait_for_selector("#connection[data-status=reconnecting]")
    context.clear_cookies()  # meanwhile the session ended, as by signing out in another tab
    app.start_daphne(port=server.port)
    page.wait_for_selector("#connection[data-status=signed-out]", timeout=30_000)
    assert page.inner_text("#connection") == "Signed out"
    assert "session has ended" in page.inner_text("#composer-error")
    tried = len(attempts)
    page.wait_for_timeout(3000)
    assert len(attempts) == tried  # no more attempts once signed out
    context.close()
    assert not violations
