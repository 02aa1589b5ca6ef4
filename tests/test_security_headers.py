"""What real daphne sends: the wrapped middleware's headers and CSRF refusals, the Content-Security-
Policy and Permissions-Policy, HSTS behind a TLS proxy only when configured, and no Server banner;
and, under production settings, the security headers on every URL pattern of the site."""

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


# --- Every URL pattern, under production settings ---------------------------------------------
# The URL map is walked, not a list of pages: a page added later is checked without being named
# here. A path parameter is filled with an object made below; a parameter this table does not
# know fails the test, so that a new kind of page is given a real object too.

PRODUCTION_HEADERS = {
    "BEHIND_TLS_PROXY": "1",
    "SECURE_COOKIES": "1",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
}
_ROUTE_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")
_REGEX_GROUP = re.compile(r"\(\?P<(\w+)>")


def url_patterns() -> list[tuple[str, object, str]]:
    """(the full pattern as written, the view, the admin model label or "") for every leaf of the URL map."""
    from django.urls import URLPattern, URLResolver, get_resolver

    found = []

    def walk(patterns, prefix: str, model: str) -> None:
        for pattern in patterns:
            text = str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                # A ModelAdmin's views carry it (django.contrib.admin wraps each with model_admin).
                wrapped = (getattr(getattr(inner, "callback", None), "model_admin", None) for inner in pattern.url_patterns)
                model_admin = next((found for found in wrapped if found is not None), None)
                walk(pattern.url_patterns, prefix + text, model_admin.opts.label if model_admin else model)
            elif isinstance(pattern, URLPattern):
                found.append((prefix + text, pattern.callback, model))

    walk(get_resolver().url_patterns, "", "")
    return found


def fill_regex(pattern: str, values: dict[str, str]) -> str:
    """A regex pattern with each named group replaced by its value (groups may nest parentheses)."""
    out, index = [], 0
    for match in _REGEX_GROUP.finditer(pattern):
        if match.start() < index:
            continue
        out.append(pattern[index:match.start()])
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(pattern[end], 0) if pattern[end - 1] != "\\" else 0
            end += 1
        out.append(values[match[1]])
        index = end
    out.append(pattern[index:])
    return "".join(out).replace("^", "").replace("$", "").replace("\\", "")


def first_alternative(pattern: str, name: str) -> str:
    return re.search(rf"\(\?P<{name}>\(?(?:\?:)?([\w-]+)", pattern)[1]


@pytest.fixture
def objects(alice):
    """alice, a superuser who can see every page, with one of each thing a URL can name."""
    from agents.models import AgentRun
    from chat.models import ChatModel, Conversation, Message, Upload
    from sharing.actions import create_link
    from support.models import Flag

    alice.is_staff = alice.is_superuser = True
    alice.save()
    demo = ChatModel.objects.get(name="parley-demo")
    conversation = Conversation.objects.create(owner=alice, model=demo, title="Headers")
    Message.objects.create(conversation=conversation, role="user", content="Hello")
    reply = Message.objects.create(conversation=conversation, role="assistant", content="Hi.", model="parley-demo")
    upload = Upload.objects.create(
        conversation=conversation, owner=alice, name="notes.txt", content_type="text/plain", size=5, data=b"notes",
        text="notes", chars=5,
    )  # fmt: skip
    run = AgentRun.objects.create(owner=alice, conversation=conversation, goal="look around", model="parley-demo")
    share = create_link(alice, conversation.pk)
    flag = Flag.objects.create(conversation=conversation, message=reply, reason="look", author_name="alice")
    token = ApiToken.issue(alice, "headers")[0]
    by_segment = {
        ("conversations", "pk"): conversation.pk, ("c", "pk"): conversation.pk, ("messages", "pk"): reply.pk,
        ("uploads", "pk"): upload.pk, ("runs", "pk"): run.pk, ("shares", "pk"): share.pk, ("tokens", "pk"): token.pk,
        ("approvals", "step"): 1, ("artifacts", "name"): "result.md", ("messages", "message_id"): reply.pk,
        ("flags", "flag_id"): flag.pk, ("s", "token"): share.token, ("models", "name"): "parley-demo",
        ("chat", "chat_id"): f"conversation-{conversation.pk}", "__user_pk__": alice.pk,
    }  # fmt: skip
    return alice, by_segment


def concrete_urls(by_segment: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """Every pattern as a path to ask, and the patterns that could not be filled."""
    from django.apps import apps
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from django.urls import resolve

    urls, unknown = [], []
    user_type = ContentType.objects.get_for_model(get_user_model())
    for pattern, view, model in url_patterns():
        if pattern.startswith("^") or "(?P<" in pattern:
            values = {"page": "usagerecord/", "url": "no-such-page/"}
            for name in _REGEX_GROUP.findall(pattern):
                if name == "app_label":
                    values[name] = first_alternative(pattern, name)
            try:
                path = fill_regex(pattern, values)
            except KeyError as missing:
                unknown.append(f"{pattern} ({missing})")
                continue
        else:
            path = pattern
            for match in reversed(list(_ROUTE_PARAMETER.finditer(pattern))):
                name = match[1]
                segment = pattern[: match.start()].rstrip("/").rpartition("/")[2]
                if name == "object_id" and "content_type_id" in pattern:
                    value = by_segment["__user_pk__"]  # the admin's "view on site" of alice
                elif model:  # a ModelAdmin's page of one object: the first there is, or none (0)
                    instance = apps.get_model(model)._default_manager.order_by("pk").first()
                    value = instance.pk if instance else 0
                elif name == "content_type_id":
                    value = user_type.pk
                elif name == "kind":
                    value = "json"
                elif (segment, name) in by_segment:
                    value = by_segment[(segment, name)]
                else:
                    unknown.append(f"<{name}> after {segment!r} in {pattern}")
                    break
                path = path[: match.start()] + str(value) + path[match.end():]
            if "<" in path:
                continue
        match = resolve("/" + path)
        if match.func is not view and getattr(match.func, "__wrapped__", None) is not view:
            unknown.append(f"/{path} resolves to {match.func!r}, not to the view of {pattern}")
            continue
        urls.append((pattern, "/" + path))
    return urls, unknown


def header_problems(path: str, response: httpx.Response) -> list[str]:
    headers = response.headers
    problems = []
    csp = headers.get("content-security-policy", "")
    if not csp:
        problems.append("no Content-Security-Policy")
    elif "unsafe-inline" in csp or "unsafe-eval" in csp:
        problems.append(f"an unsafe Content-Security-Policy: {csp}")
    elif csp_directives(csp).get("frame-ancestors") != "'none'":
        problems.append("no frame-ancestors 'none'")
    # A shared conversation's page sends no referrer at all: its URL is the secret.
    if headers.get("referrer-policy") not in {"same-origin", "no-referrer"}:
        problems.append(f"referrer-policy: {headers.get('referrer-policy')!r}, not same-origin or no-referrer")
    expected = {"x-content-type-options": "nosniff", "x-frame-options": "DENY"}
    if headers.get("content-type", "").startswith("text/html"):
        expected["cross-origin-opener-policy"] = "same-origin"
    expected["strict-transport-security"] = "max-age=31536000; includeSubDomains; preload"
    for name, value in expected.items():
        if headers.get(name) != value:
            problems.append(f"{name}: {headers.get(name)!r}, not {value!r}")
    return [f"{path} ({response.status_code}): {problem}" for problem in problems]


def test_every_url_pattern_carries_the_security_headers_for_anonymous_and_signed_in_users(live_factory, objects):
    from django.test import Client

    alice, by_segment = objects
    urls, unknown = concrete_urls(by_segment)
    assert not unknown, "URL patterns this test cannot fill yet:\n" + "\n".join(unknown)
    assert len(urls) > 200  # the whole map, the admin's included
    signed_in = Client()
    signed_in.force_login(alice)
    session = signed_in.cookies["sessionid"].value
    server = live_factory(**PRODUCTION_HEADERS).start_daphne()
    problems, statuses = [], {}
    for cookie in ("", f"sessionid={session}"):
        headers = {**HTTPS_PROXY, **({"Cookie": cookie} if cookie else {})}
        with httpx.Client(base_url=server.url, headers=headers, timeout=20) as client:
            for _pattern, path in urls:
                # Headers only: event streams stay open, and no page's body matters here.
                with client.stream("GET", path) as response:
                    problems += header_problems(path, response)
                    statuses.setdefault(bool(cookie), []).append(response.status_code)
    assert not problems, "\n".join(problems)
    # The signed-in walk reached the pages themselves, not only the sign-in redirect.
    assert statuses[True].count(200) > statuses[False].count(200) + 50
