"""With the default heartbeat and reap settings, a web process killed mid-reply leaves its reply
`interrupted` well within 30 s of its last heartbeat: real daphne, a real Celery worker with beat."""

import os
import subprocess
import sys
import time

import httpx
import pytest
from django.conf import settings

from accounts.models import ApiToken
from chat.models import Message
from parley.redis_clients import sync_client_for
from streaming.keys import heartbeat_key

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

DEADLINE_SECONDS = 30
# The default TTL (15 s) and reap interval (5 s), plus time for the worker to run the reap.
WORST_CASE_SECONDS = 25


def test_a_killed_process_is_reaped_within_the_deadline_on_default_settings(live_factory, alice):
    app = live_factory()
    for name in ("PARLEY_HEARTBEAT_SECONDS", "PARLEY_HEARTBEAT_TTL", "PARLEY_REAP_SECONDS"):
        app.env.pop(name, None)  # the defaults a deployment gets
    doomed = app.start_daphne()
    app.start_worker()
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'reap')[1]}"}
    conversation = httpx.post(f"{doomed.url}/api/conversations/", json={}, headers=headers).json()["id"]
    sent = httpx.post(f"{doomed.url}/api/conversations/{conversation}/messages", json={"content": "long /words 3000 /slow 50"}, headers=headers)
    reply_id = sent.json()["assistant_message"]["id"]
    client = sync_client_for(settings.REDIS_URL)
    key = heartbeat_key(Message.objects.get(pk=reply_id).generator)
    # The worst moment to die: right after a heartbeat, which then lives its whole TTL.
    previous, deadline = None, time.monotonic() + 30
    while time.monotonic() < deadline:
        ttl = client.pttl(key)
        if previous is not None and previous >= 0 and ttl > previous:  # a refresh, not the first beat
            break
        previous = ttl
        time.sleep(0.02)
    else:
        pytest.fail("the generating process never refreshed its heartbeat")
    doomed.kill()
    died = time.monotonic()
    while Message.objects.get(pk=reply_id).status != "interrupted":
        assert time.monotonic() - died < DEADLINE_SECONDS + 10, "never reaped"
        time.sleep(0.2)
    waited = time.monotonic() - died
    client.close()
    assert waited < WORST_CASE_SECONDS < DEADLINE_SECONDS, f"reaped {waited:.1f} s after the process died"
    assert Message.objects.get(pk=reply_id).content.startswith("word1 word2")


def test_the_default_settings_bound_the_wait_with_margin():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_HEARTBEAT", "PARLEY_REAP"))}
    code = "from django.conf import settings as s; print(s.PARLEY_HEARTBEAT_TTL + s.CELERY_BEAT_SCHEDULE['reap-interrupted-generations']['schedule'])"
    worst = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"], env={**env, "DJANGO_SETTINGS_MODULE": "parley.settings"},
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert float(worst) <= 20
