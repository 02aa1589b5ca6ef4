"""A reply whose provider reported no token counts shows the ledger's estimates, marked so: in the
`done` event, in the stored reply and in `GET /api/conversations/<id>/`."""

import json
from decimal import Decimal

import httpx
import pytest

from accounts.models import ApiToken
from billing.models import UsageRecord
from tests.test_live_streaming import send, sse_events

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_a_stopped_reply_shows_the_estimated_tokens_and_cost_it_was_billed(live_app, alice):
    token = ApiToken.issue(alice, "estimates")[1]
    headers = {"Authorization": f"Bearer {token}"}
    created = send(live_app.url, token, "estimate me /words 3000 /slow 20")
    reply_id = created["assistant_message"]["id"]
    with httpx.stream("GET", f"{live_app.url}/api/messages/{reply_id}/events", headers=headers, timeout=30) as response:
        seen = 0
        for line in response.iter_lines():
            if line.startswith("event: delta"):
                seen += 1
                if seen == 3:
                    stop = httpx.post(f"{live_app.url}/api/messages/{reply_id}/stop", headers=headers)
                    assert stop.status_code == 202, stop.text
                    break
    with httpx.stream("GET", f"{live_app.url}/api/messages/{reply_id}/events", headers=headers, timeout=30) as response:
        final = sse_events(response)[-1]
    assert final["event"] == "done"
    done = json.loads(final["data"])
    assert done["status"] == "stopped"

    detail = httpx.get(f"{live_app.url}/api/conversations/{created['conversation']['id']}/", headers=headers).json()
    reply = next(message for message in detail["messages"] if message["id"] == reply_id)
    entry = UsageRecord.objects.get(message_id=reply_id)
    assert entry.estimated
    assert reply["usage"] == {
        "prompt_tokens": entry.prompt_tokens,
        "completion_tokens": entry.completion_tokens,
        "estimated": True,
        "cost_usd": reply["usage"]["cost_usd"],
    }
    assert entry.prompt_tokens > 0 and entry.completion_tokens > 0
    assert Decimal(reply["usage"]["cost_usd"]) == entry.cost_usd
    assert done["usage"] == reply["usage"]
