"""The plain page of docs/ai-sdk-example.md, served from another origin and run by Chromium with
the `ai` package from node_modules: its preflights and CORS pass for the token's origin, a reply
streams, and a reload in the middle of it resumes the whole reply."""

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from accounts.models import ApiToken
from chat.models import Message
from tests.browser.conftest import browser, context, page, user  # noqa: F401  (fixtures)
from tests.live import free_port, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "node_modules"
# The browser resolves the package's bare imports through this map, to the files Node would load.
IMPORTS = {
    "ai": "ai/dist/index.mjs",
    "@ai-sdk/gateway": "@ai-sdk/gateway/dist/index.mjs",
    "@ai-sdk/provider": "@ai-sdk/provider/dist/index.mjs",
    "@ai-sdk/provider-utils": "@ai-sdk/provider-utils/dist/index.mjs",
    "@opentelemetry/api": "@opentelemetry/api/dist/index.mjs",
    "@vercel/oidc": "@vercel/oidc/dist/index-browser.js",
    "eventsource-parser/stream": "eventsource-parser/dist/stream.js",
    "zod": "zod/index.js",
    "zod/v3": "zod/v3/index.js",
    "zod/v4": "zod/v4/index.js",
}
COMMONJS = {"@vercel/oidc/dist/index-browser.js": ("getContext", "getVercelOidcToken", "getVercelOidcTokenSync")}


def example_page(parley: str, token: str) -> bytes:
    """The documented page as written, pointed at this Parley with this token and the local package."""
    html = re.search(r"```html\n(.*?)```", (ROOT / "docs" / "ai-sdk-example.md").read_text(), re.S).group(1)
    html = html.replace('"https://esm.sh/ai@6.0.326"', '"ai"')
    html = html.replace('"https://parley.example.com"', f'"{parley}"').replace('"prl_…"', f'"{token}"')
    imports = ", ".join(f'"{name}": "/modules/{path}"' for name, path in IMPORTS.items())
    return html.replace("<script type=\"module\">", f'<script type="importmap">{{"imports": {{{imports}}}}}</script>\n<script type="module">', 1).encode()


def module_source(path: str) -> bytes:
    source = MODULES / path
    if path in COMMONJS:  # a CommonJS browser build, given to the module loader as ESM
        exports = "".join(f"export const {name} = main.{name};\n" for name in COMMONJS[path])
        return (commonjs_bundle(source) + f"const main = load({source.stem!r});\n" + exports).encode()
    return source.read_bytes()


def commonjs_bundle(entry: Path) -> str:
    """CommonJS files (the entry and the siblings it requires) as factories with a small `load`."""
    factories, pending = {}, [entry]
    while pending:
        file = pending.pop()
        if file.stem in factories:
            continue
        text = file.read_text()
        factories[file.stem] = f"(module, exports, require) => {{\n{text}\n}}"
        pending += [file.parent / f"{name}.js" for name in re.findall(r'require\("\./([\w-]+)"\)', text)]
    table = ",\n".join(f"{name!r}: {factory}" for name, factory in factories.items())
    return (
        f"const factories = {{{table}}};\nconst loaded = {{}};\n"
        "function load(name) {\n  if (!(name in loaded)) {\n    const module = {exports: {}};\n    loaded[name] = module;\n"
        "    factories[name](module, module.exports, (path) => load(path.replace(/^\\.\\//, '')));\n  }\n"
        "  return loaded[name].exports;\n}\n"
    )


@pytest.fixture
def page_site():
    """A site on another origin, serving the example page and the package's files."""
    port = free_port()
    served: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/":
                body, kind = served["page"], "text/html"
            elif path == "/favicon.ico":
                self.send_response(204)
                self.end_headers()
                return
            elif path.startswith("/modules/") and ".." not in path:
                body, kind = module_source(path.removeprefix("/modules/")), "text/javascript"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}", served
    server.shutdown()
    server.server_close()


def wait_for_log(log: Path, after: int, text: str) -> None:
    """The server logs a refused request as it answers; the browser's opaque answer may come first."""
    deadline = time.monotonic() + 10
    while text not in log.read_bytes()[after:].decode(errors="replace"):
        assert time.monotonic() < deadline, f"the server never logged {text!r}"
        time.sleep(0.05)


def wait_for(tab, condition: str, problems: list[str]) -> None:
    """Waits for the page's condition; a timeout says what went wrong in the page."""
    try:
        tab.wait_for_function(condition, timeout=60_000)
    except Exception as error:
        raise AssertionError(f"{condition} never held; the page reported {problems}") from error


def test_the_example_page_streams_and_resumes_after_a_reload(browser, live_app, alice, page_site):  # noqa: F811
    origin, served = page_site
    token = ApiToken.issue(alice, "page", scopes=[ApiToken.Scope.GATEWAY], allowed_origins=origin)[1]
    served["page"] = example_page(live_app.url, token)
    profile = browser.new_context()
    profile.set_default_timeout(20_000)
    tab = profile.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(str(error)))
    tab.on("dialog", lambda dialog: (problems.append(dialog.message), dialog.dismiss()))
    tab.on("console", lambda message: problems.append(f"console: {message.text}") if message.type == "error" else None)
    tab.on("requestfailed", lambda request: problems.append(f"failed: {request.url} {request.failure}"))
    tab.goto(f"{origin}/?chat=from-the-page")
    words = 300
    tab.fill("#text", f"long /words {words} /slow 15")
    tab.click("#ask button")
    wait_for(tab, "() => /assistant: (\\S+\\s+){10}/.test(document.getElementById('log').textContent)", problems)
    tab.reload()  # mid-reply: the page loses everything but its URL's chat id
    expected = " ".join(f"word{n}" for n in range(1, words + 1))
    wait_for(tab, f"() => document.getElementById('log').textContent.endsWith('word{words}')", problems)
    shown = tab.locator("#log p").all_text_contents()
    profile.close()
    assert shown == [f"assistant: {expected}"]  # the whole reply, once: nothing lost or repeated
    # the only failure: the send's stream, cut by the reload
    assert problems == [f"failed: {live_app.url}/api/ai-sdk/chat net::ERR_ABORTED"]
    # The last word reaches the page before the reply is settled in the database.
    reply = wait_until(
        lambda: Message.objects.filter(conversation__external_id="from-the-page", role="assistant")
        .exclude(status__in=Message.ACTIVE).first(), 15, "the reply's settling",
    )
    assert (reply.status, reply.content) == (Message.Status.COMPLETE, expected)


POST_FROM_PAGE = """async ([url, chatId, text]) => {
  const response = await fetch(url, {
    method: "POST", credentials: "include", headers: {"content-type": "application/json"},
    body: JSON.stringify({id: chatId, trigger: "submit-message",
                          messages: [{id: "u1", role: "user", parts: [{type: "text", text}]}]}),
  });
  return {status: response.status, body: await response.text()};
}"""


def test_the_sites_own_page_posts_with_its_session_and_its_tabs_cope(page, live_app, user, page_site):  # noqa: F811
    """Chromium's own Origin and Sec-Fetch-Site let the signed-in page through; the chat page, told
    of the new reply of a conversation it does not list, lists nothing new and breaks nothing."""
    # The chat page's socket is told of the send and redraws its list of conversations.
    with page.expect_response(lambda response: urlsplit(response.url).path == "/conversations/") as redrawn:
        answer = page.evaluate(POST_FROM_PAGE, [f"{live_app.url}/api/ai-sdk/chat", "own-page", "hi /words 5"])
    assert redrawn.value.ok
    assert answer["status"] == 200, answer["body"]
    assert '"type":"finish"' in answer["body"] and answer["body"].endswith("data: [DONE]\n\n")
    reply = Message.objects.get(conversation__external_id="own-page", role="assistant")
    assert reply.conversation.owner == user and reply.content == "word1 word2 word3 word4 word5"
    page.wait_for_load_state("networkidle")
    assert "hi /words 5" not in page.inner_text("#conversation-list")  # not listed, and the page still works
    # Another origin's page in the same browser sends the user's cookie: refused, nothing stored.
    origin, served = page_site
    served["page"] = b"<!doctype html><title>elsewhere</title>"
    elsewhere = page.context.new_page()
    elsewhere.goto(f"{origin}/")
    log = live_app.servers[0].log_path
    seen = log.stat().st_size
    forged = elsewhere.evaluate(
        """async ([url]) => {
          try {
            const response = await fetch(url, {method: "POST", mode: "no-cors", credentials: "include",
              headers: {"content-type": "text/plain"}, body: JSON.stringify({id: "forged", trigger: "submit-message",
                messages: [{id: "u1", role: "user", parts: [{type: "text", text: "planted"}]}]})});
            return response.type;
          } catch (error) { return String(error); }
        }""",
        [f"{live_app.url}/api/ai-sdk/chat"],
    )
    assert forged == "opaque"  # the page learns nothing; the server says why it refused:
    wait_for_log(log, seen, "Forbidden: /api/ai-sdk/chat")
    assert not Message.objects.filter(conversation__external_id="forged").exists()
