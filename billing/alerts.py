"""Cost alerts: the admins get one email when a user, or the whole site, passes 50, 80 and 100 %
of a monthly budget; one per threshold per month, however many processes notice it.

The web process only notices (from the counters its settle returned) and asks the worker; the
worker checks the ledger, which is the truth, records the alert and sends the email.
"""

import logging
import re
import time
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.urls import reverse

from accounts.models import User
from accounts.plans import limits_for
from billing import quotas
from billing.models import CostAlert, UsageRecord
from chat.enqueue import enqueue
from parley import deferred

logger = logging.getLogger(__name__)

THRESHOLDS = (50, 80, 100)
# A process asks the worker about one alert at most this often while the ledger has not caught up.
RECHECK_SECONDS = 60.0
_sent: set[str] = set()  # alerts this process knows were sent: never asked about again
_asked: dict[str, float] = {}


def alert_key(scope: str, user_id: int | None, period: str, threshold: int) -> str:
    return f"{scope}:{user_id or '-'}:{period}:{threshold}"


def reached(spent_micro: int, budget_micro: int) -> list[int]:
    """The thresholds that spending has reached (none without a budget)."""
    if budget_micro <= 0:
        return []
    return [threshold for threshold in THRESHOLDS if spent_micro * 100 >= budget_micro * threshold]


def after_charge(
    user_id: int | None, period: str, user_spent_micro: int | None, user_budget_micro: int, site_spent_micro: int | None
) -> None:
    """A call's cost was settled: ask the worker about each threshold the counters say was reached.

    Runs after the settle, off the shared database thread (parley/deferred.py): in-memory checks
    first, so that a reply of a user under half their budget costs nothing more. Two deferred
    threads may both ask about one threshold; the worker records and sends it once.
    """
    candidates: list[tuple[str, int | None, int]] = []
    if user_spent_micro is not None:
        candidates += [(CostAlert.Scope.USER, user_id, t) for t in reached(user_spent_micro, user_budget_micro)]
    site_budget = settings.PARLEY_SITE_BUDGET_USD
    if site_spent_micro is not None and site_budget is not None:
        candidates += [(CostAlert.Scope.SITE, None, t) for t in reached(site_spent_micro, int(site_budget * quotas.MICRO_USD))]
    now = time.monotonic()
    for scope, who, threshold in candidates:
        key = alert_key(scope, who, period, threshold)
        if key in _sent or _asked.get(key, 0.0) > now:
            continue
        _asked[key] = now + RECHECK_SECONDS
        if CostAlert.objects.filter(key=key).exists():
            _sent.add(key)
            continue
        _enqueue(scope, who, period, threshold)


def _enqueue(scope: str, user_id: int | None, period: str, threshold: int) -> None:
    enqueue("check_cost_alert", scope, user_id, period, threshold, why_it_matters="the next call over the threshold asks again")


def validate(scope: object, user_id: object, period: object, threshold: object) -> None:
    """What the task accepts: anything else is a bug or a forged message, refused loudly."""
    if scope not in CostAlert.Scope.values:
        raise ValueError(f"scope must be one of {CostAlert.Scope.values}, got {scope!r}")
    if scope == CostAlert.Scope.USER and (not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0):
        raise ValueError(f"a user alert needs a user id, got {user_id!r}")
    if scope == CostAlert.Scope.SITE and user_id is not None:
        raise ValueError("a site alert has no user")
    if not isinstance(period, str) or not re.fullmatch(r"\d{4}(0[1-9]|1[0-2])", period):
        raise ValueError(f"period must be a month as YYYYMM, got {period!r}")
    if threshold not in THRESHOLDS or isinstance(threshold, bool):
        raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")


def check(scope: str, user_id: int | None, period: str, threshold: int) -> CostAlert | None:
    """Record and email the alert if the ledger says the threshold was passed and nobody has yet."""
    validate(scope, user_id, period, threshold)
    windows = quotas.Windows.at(time.time())
    if period != windows.month:
        return None  # that month is over
    key = alert_key(scope, user_id, period, threshold)
    if CostAlert.objects.filter(key=key).exists():
        return None
    user = None
    if scope == CostAlert.Scope.USER:
        user = User.objects.filter(pk=user_id).first()
        budget = limits_for(user.pk)[1].cost_per_month if user is not None else None
        spent = Decimal(quotas.ledger_totals(user.pk, windows)[4]) / quotas.MICRO_USD if user is not None else Decimal(0)
    else:
        budget = settings.PARLEY_SITE_BUDGET_USD
        spent = quotas.site_ledger_cost(windows)
    if budget is None or spent * 100 < budget * threshold:
        return None  # the counters held reservations of calls still running; a later call asks again
    recipients = alert_recipients()
    with transaction.atomic():
        alert, created = CostAlert.objects.get_or_create(
            key=key,
            defaults={"scope": scope, "user": user, "period": period, "threshold": threshold, "spent_usd": spent,
                      "budget_usd": budget, "recipients": ", ".join(recipients)},
        )
        if not created:
            return None
        if recipients:
            # Inside the transaction: if sending fails, the alert is not recorded and the task retries.
            _message(alert, user, recipients).send()
        else:
            logger.warning("Cost alert %s has nobody to go to: set PARLEY_ALERT_EMAILS or give a superuser an email", key)
    logger.info("Cost alert %s sent to %s", key, recipients)
    return alert


def alert_recipients() -> list[str]:
    if settings.PARLEY_ALERT_EMAILS:
        return list(settings.PARLEY_ALERT_EMAILS)
    emails = User.objects.filter(is_superuser=True, is_active=True).exclude(email="").values_list("email", flat=True)
    return sorted(set(emails))


def _message(alert: CostAlert, user: User | None, recipients: list[str]) -> EmailMessage:
    month = datetime.strptime(alert.period, "%Y%m").strftime("%B %Y")
    amounts = f"${alert.spent_usd:,.2f} of ${alert.budget_usd:,.2f}"
    usage_url = settings.PARLEY_PUBLIC_URL + reverse("admin_usage")
    if user is not None:
        subject = f"Parley: {user.username} has used {alert.threshold} % of their monthly budget"
        body = (
            f"{user.username} has spent {amounts} of their plan's monthly budget for {month}"
            f" ({alert.threshold} % threshold).\n\nTheir usage: {usage_url}?user={user.pk}\n"
            f"Their plan and overrides: {settings.PARLEY_PUBLIC_URL}{reverse('admin:accounts_user_change', args=[user.pk])}\n"
        )
    else:
        subject = f"Parley: the site has used {alert.threshold} % of its monthly budget"
        body = f"All users together have spent {amounts} of the site's budget for {month} ({alert.threshold} % threshold).\n\nUsage: {usage_url}\n"
    body += "\nYou get one email per threshold (50, 80 and 100 %) each month.\n"
    return EmailMessage(subject, body, to=recipients)


def overspent(entry: UsageRecord) -> None:
    """A provider reported more output than the call reserved (it ignored max_tokens): never silent.
    Logged at once; the admins are emailed by the worker once the ledger row is committed."""
    logger.warning(
        "%s call %s on %s/%s reported %d output tokens, %d beyond its reservation", entry.kind, entry.pk,
        entry.provider, entry.model, entry.completion_tokens, entry.over_reservation_tokens,
    )

    deferred.after_commit(
        lambda: enqueue("alert_overspend", entry.pk, why_it_matters="the overspend is in the ledger and the log, not emailed"),
        "overspend alert request",
    )


def send_overspend_alert(record_id: int) -> bool:
    """Email the admins about one overspent call, once: True when this call sent it."""
    with transaction.atomic():
        # Only the ledger row is locked: its user may be empty (a shadow run's), and PostgreSQL locks no
        # row on the outer-joined side.
        entry = UsageRecord.objects.select_for_update(of=("self",)).select_related("user").filter(
            pk=record_id, over_reservation_tokens__gt=0, overspend_alerted=False
        ).first()
        if entry is None:
            return False
        recipients = alert_recipients()
        if recipients:
            # Inside the transaction: if sending fails, the row stays unalerted and the task retries.
            _overspend_message(entry, recipients).send()
        else:
            logger.warning("Overspend of usage record %s has nobody to go to: set PARLEY_ALERT_EMAILS", record_id)
        UsageRecord.objects.filter(pk=record_id).update(overspend_alerted=True)
    return True


def _overspend_message(entry: UsageRecord, recipients: list[str]) -> EmailMessage:
    reserved = entry.completion_tokens - entry.over_reservation_tokens
    record_url = settings.PARLEY_PUBLIC_URL + reverse("admin:billing_usagerecord_change", args=[entry.pk])
    subject = f"Parley: {entry.provider}/{entry.model} wrote more than a call reserved"
    body = (
        f"A {entry.kind} call for {entry.user.username if entry.user else 'the site (a shadow run)'} asked {entry.provider}/{entry.model} for at most {reserved:,}"
        f" output tokens, and the provider reported {entry.completion_tokens:,}: {entry.over_reservation_tokens:,}"
        f" more than the reservation. The ledger bills what the provider reported (${entry.cost_usd:,.6f}).\n\n"
        f"Parley ends a reply at its reserved output when it can count it; a provider that ignores max_tokens"
        f" and counts its tokens otherwise can still overspend. Check the model's server.\n\nThe call: {record_url}\n"
    )
    return EmailMessage(subject, body, to=recipients)
