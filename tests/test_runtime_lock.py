"""`bin/parley run` installs requirements.lock alone, without the test packages: everything the
running app loads, the provider SDKs' transports included, must be in it."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Imported when present, with a fallback when not: not needed at run time.
OPTIONAL = {"greenlet"}  # celery.utils.threads falls back to thread idents

# Loads what a web process and a worker load, and opens each provider adapter's client, whose
# transport (aiohttp under the OpenAI SDK) is imported only then.
PROBE = """
import asyncio, importlib, json, os, pkgutil, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parley.settings")
import django
django.setup()
from django.conf import settings
for app in ("parley", "accounts", "agents", "billing", "chat", "providers", "sharing", "streaming"):
    package = importlib.import_module(app)
    for info in pkgutil.walk_packages(package.__path__, app + "."):
        if ".migrations" not in info.name and not info.name.endswith("devserver"):
            importlib.import_module(info.name)
import parley.asgi, parley.celery

async def open_clients():
    from providers import new_provider
    for name in ("openai", "anthropic"):
        provider = new_provider(name)
        provider._clients.get("http://127.0.0.1:9/v1", "key")
        await provider.aclose()

asyncio.run(open_clients())
from importlib.metadata import packages_distributions
owners = packages_distributions()
found = set()
for module in list(sys.modules):
    top = module.partition(".")[0]
    for dist in owners.get(top, []):
        found.add(dist)
print(json.dumps(sorted(found)))
"""


def locked(path: Path) -> set[str]:
    names = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", path.read_text(), re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower() for name in names}


def test_everything_the_running_app_loads_is_in_the_runtime_lock():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = {re.sub(r"[-_.]+", "-", name).lower() for name in __import__("json").loads(done.stdout.strip().splitlines()[-1])}
    runtime = locked(ROOT / "requirements.lock")
    missing = sorted(loaded - runtime - OPTIONAL - {"parley"})
    assert "aiohttp" in loaded  # the probe reached the SDKs' transports
    assert not missing, f"loaded by the app but not in requirements.lock (only in the test lock?): {missing}"
