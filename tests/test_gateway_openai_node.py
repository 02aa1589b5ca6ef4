"""The OpenAI-compatible gateway through the official `openai` npm package, run by Node.js against
a real daphne: a whole completion, a streamed one with its usage, and a refusal as the package's
own error class. Node and the package are required: their absence fails the test."""

import json
import shutil
import subprocess

import pytest

from accounts.models import ApiToken
from tests import gateway_live
from tests.live import ROOT

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]
gateway_app = gateway_live.gateway_app
SCRIPT = ROOT / "tests" / "node" / "openai_gateway.mjs"


def test_the_openai_npm_package_completes_streams_and_reads_refusals(gateway_app, alice):
    node = shutil.which("node")
    assert node, "Node.js is required for this test"
    assert (ROOT / "node_modules" / "openai" / "package.json").exists(), "the openai npm package is required (npm ci)"
    raw = ApiToken.issue(alice, "node", scopes=["gateway"])[1]
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "PARLEY_URL": gateway_app.url, "PARLEY_TOKEN": raw, "PARLEY_MODEL": "parley-demo"}
    done = subprocess.run([node, str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)

    assert seen["whole"]["object"] == "chat.completion"
    assert seen["whole"]["text"] == "word1 word2 word3 word4" and seen["whole"]["finish_reason"] == "stop"
    assert seen["whole"]["usage"]["completion_tokens"] == 4

    streamed = seen["streamed"]
    assert streamed["text"] == "word1 word2 word3 word4 word5 word6" and streamed["finish_reason"] == "stop"
    assert streamed["usage"]["completion_tokens"] == 6
    assert streamed["usage"]["total_tokens"] == streamed["usage"]["prompt_tokens"] + 6

    assert seen["refused"] == {
        "raised": "NotFoundError", "is_not_found": True, "status": 404, "code": "model_not_found", "type": "invalid_request_error",
    }
    assert "parley-demo" in seen["models"]
