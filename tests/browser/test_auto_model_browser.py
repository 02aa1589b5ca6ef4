"""Auto in the picker: a message with code goes to the model the admins' rule names; the reply is
labelled by that model and its Details name the rule and why, as text, after a reload too."""

from decimal import Decimal

import pytest

from billing.models import UsageRecord
from chat.models import ChatModel, Message
from routing.models import RouteRule
from tests.browser.test_chat_browser import wait_for_status

pytestmark = [pytest.mark.browser, pytest.mark.live]

RULE = "Code <i>questions</i>"  # drawn as the text it is


def test_auto_sends_code_to_the_rules_model_and_details_name_the_rule(page, user):
    priced = ChatModel.objects.create(
        name="priced-demo", label="Priced demo", provider="demo", input_price_per_million=Decimal("10"),
        output_price_per_million=Decimal("40"),
    )
    RouteRule.objects.create(name=RULE, target=priced, contains_code=True)
    page.reload()
    page.wait_for_selector("#model-picker option[value=auto]", state="attached")
    page.select_option("#model-picker", "auto")
    page.fill("#composer-input", "Why does this fail? /words 5\n```python\nprint(1/0)\n```")
    page.press("#composer-input", "Enter")
    page.wait_for_selector(".msg-assistant")
    wait_for_status(page, "complete")
    assert page.inner_text(".model-badge") == "Auto (picks a model for each message)"

    page.click(".msg-assistant .msg-details-toggle")
    details = page.inner_text(".msg-assistant .msg-details")
    assert "priced-demo (demo)" in details  # the model that answered, not auto
    assert f"Chosen by rule “{RULE}”: the message contains code" in details
    assert page.locator(".msg-assistant .msg-details i").count() == 0

    reply = Message.objects.get(role="assistant", conversation__owner=user)
    assert (reply.model, reply.routing["rule"]) == ("priced-demo", RULE)
    assert UsageRecord.objects.get(message_id=reply.pk).model == "priced-demo"

    page.reload()  # drawn again from the stored reply
    page.wait_for_selector(".msg-assistant .msg-details-toggle")
    page.click(".msg-assistant .msg-details-toggle")
    assert page.inner_text(".msg-assistant .msg-details") == details
