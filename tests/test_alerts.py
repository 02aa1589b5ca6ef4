"""Cost alerts: one email per user (or site), threshold and month, checked against the ledger."""

import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from accounts.models import ApiToken, Plan
from billing import alerts, quotas
from billing.models import CostAlert, UsageRecord
from chat.models import ChatModel

pytestmark = pytest.mark.django_db


def month() -> str:
    return quotas.Windows.at(time.time()).month


def spend(user, cost: str) -> None:
    UsageRecord.objects.create(user=user, kind="reply", provider="openai", model="gpt-4.1", cost_usd=Decimal(cost), outcome="complete")


@pytest.fixture
def budget(settings, django_user_model):
    """Alice's plan allows $10 a month; one superuser with an email receives the alerts."""
    Plan.objects.filter(name="Free").update(cost_per_month=Decimal("10.00"))
    django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")
    settings.PARLEY_ALERT_EMAILS = []


def test_thresholds_reached():
    assert alerts.reached(4_999_999, 10_000_000) == []
    assert alerts.reached(5_000_000, 10_000_000) == [50]
    assert alerts.reached(12_000_000, 10_000_000) == [50, 80, 100]
    assert alerts.reached(12_000_000, -1) == []


@pytest.mark.parametrize(
    "args",
    [("planet", 1, "202611", 50), ("user", None, "202611", 50), ("user", True, "202611", 50), ("site", 3, "202611", 50),
     ("user", 1, "2026-11", 50), ("user", 1, "202613", 50), ("user", 1, "202611", 60), ("user", 1, "202611", "50")],
)
def test_the_task_refuses_malformed_arguments(args):
    with pytest.raises(ValueError):
        alerts.check(*args)


def test_a_user_past_80_percent_gets_one_email_per_threshold(budget, alice, mailoutbox):
    spend(alice, "8.10")
    assert alerts.check("user", alice.pk, month(), 80) is not None
    assert alerts.check("user", alice.pk, month(), 80) is None  # once per threshold and month
    assert alerts.check("user", alice.pk, month(), 100) is None  # not reached
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["root@example.com"]
    assert mail.subject == "Parley: alice has used 80 % of their monthly budget"
    assert "$8.10 of $10.00" in mail.body and f"/admin/usage/?user={alice.pk}" in mail.body
    alert = CostAlert.objects.get()
    assert (alert.scope, alert.user, alert.threshold, alert.spent_usd) == ("user", alice, 80, Decimal("8.10"))


def test_counters_ahead_of_the_ledger_send_nothing_yet(budget, alice, mailoutbox):
    spend(alice, "4.00")  # the counters may have said 50 % because of a reservation still running
    assert alerts.check("user", alice.pk, month(), 50) is None
    assert mailoutbox == [] and not CostAlert.objects.exists()


def test_a_past_month_is_not_alerted(budget, alice, mailoutbox):
    spend(alice, "9.00")
    assert alerts.check("user", alice.pk, "202001", 50) is None and mailoutbox == []


def test_the_site_budget_alerts_too(budget, alice, bob, settings, mailoutbox):
    settings.PARLEY_SITE_BUDGET_USD = Decimal("20")
    settings.PARLEY_ALERT_EMAILS = ["ops@example.com"]
    spend(alice, "6")
    spend(bob, "5")
    assert alerts.check("site", None, month(), 50) is not None
    assert alerts.check("site", None, month(), 80) is None
    assert [m.to for m in mailoutbox] == [["ops@example.com"]]
    assert mailoutbox[0].subject == "Parley: the site has used 50 % of its monthly budget"
    assert "$11.00 of $20.00" in mailoutbox[0].body


def test_a_failed_email_is_not_recorded_so_the_retry_sends_it(budget, alice, monkeypatch):
    spend(alice, "5")

    def refuse(self, *args, **kwargs):
        raise OSError("mail server down")

    monkeypatch.setattr("django.core.mail.EmailMessage.send", refuse)
    with pytest.raises(OSError):
        alerts.check("user", alice.pk, month(), 50)
    assert not CostAlert.objects.exists()


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_reply_that_crosses_half_the_budget_emails_the_admins_once(live_factory, alice, tmp_path):
    mail_dir = tmp_path / "mail"
    app = live_factory(
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend", EMAIL_FILE_PATH=str(mail_dir),
        PARLEY_ALERT_EMAILS="budget@example.com",
        # Its own queue: a worker another test left running must not take (and print) the alert.
        PARLEY_CELERY_QUEUE=f"{settings.CELERY_TASK_DEFAULT_QUEUE}-alerts",
    )
    server = app.start_daphne()
    app.start_worker()
    ChatModel.objects.create(
        name="priced-demo", label="Priced demo", provider="demo", input_price_per_million=Decimal(20_000),
        output_price_per_million=Decimal(20_000),
    )
    Plan.objects.filter(name="Free").update(cost_per_month=Decimal("10.00"), max_output_tokens=64)
    spend(alice, "4.95")
    headers = {"Authorization": f"Bearer {ApiToken.issue(alice, 'alerts')[1]}"}

    def send(text: str) -> None:
        conversation = httpx.post(f"{server.url}/api/conversations/", json={"model": "priced-demo"}, headers=headers).json()
        sent = httpx.post(f"{server.url}/api/conversations/{conversation['id']}/messages", json={"content": text}, headers=headers)
        assert sent.status_code == 201, sent.text
        with httpx.stream("GET", f"{server.url}/api/messages/{sent.json()['assistant_message']['id']}/events",
                          headers=headers, timeout=30) as events:
            for line in events.iter_lines():
                if line.startswith("event: done"):
                    break

    send("first /words 5")  # a few cents: past $5
    send("second /words 5")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not CostAlert.objects.exists():
        time.sleep(0.2)
    time.sleep(1)  # the second reply's check, if any, has had its time
    assert list(CostAlert.objects.values_list("threshold", flat=True)) == [50]
    mails = [path.read_text() for path in Path(mail_dir).glob("*.log")]
    assert len(mails) == 1 and "alice has used 50 % of their monthly budget" in mails[0]
    assert "To: budget@example.com" in mails[0]


@pytest.mark.django_db(transaction=True)
def test_a_shadow_runs_overspend_is_alerted_as_the_sites(settings, mailoutbox):
    settings.PARLEY_ALERT_EMAILS = ["ops@example.com"]
    entry = UsageRecord.objects.create(
        user=None, kind="shadow", provider="openai", model="shadowing", outcome="complete", completion_tokens=900,
        over_reservation_tokens=600,
    )
    assert alerts.send_overspend_alert(entry.pk) is True
    assert alerts.send_overspend_alert(entry.pk) is False  # once
    assert len(mailoutbox) == 1 and "for the site (a shadow run)" in mailoutbox[0].body
