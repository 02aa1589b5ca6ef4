"""Conversations deleted once their owner's retention period has passed since their last activity
(`Conversation.updated`).

The period is the owner's plan's (a user without a plan has the default plan, as for every limit),
else the site settings'; empty there too: kept forever, the default. A conversation with a reply
still being written or an agent run still under way is left for a later purge. The deletion itself
is the owner's Delete (`chat.actions.delete_conversations`): rows, files, artifacts and event logs.

Work goes in batches of ids, each its own short transaction, so that no DELETE holds the tables
(on SQLite: the whole database) for long, and a purge stopped half way has lost nothing: the next
one goes on. The ledger and the support audit record keep their rows."""

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.apps import apps
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from accounts.models import Plan, SiteSettings
from agents.models import AgentRun
from chat.actions import delete_conversations
from chat.models import Conversation, Message

logger = logging.getLogger(__name__)

BATCH = 500


@dataclass(slots=True)
class PurgeReport:
    conversations: int = 0
    batches: int = 0
    rows: Counter[str] = field(default_factory=Counter)  # per model label, as QuerySet.delete() counts them

    def summary(self) -> str:
        parts = [f"{count} {apps.get_model(label)._meta.verbose_name_plural}" for label, count in sorted(self.rows.items())
                 if label != Conversation._meta.label and count]
        conversations = f"{self.conversations} conversation{'' if self.conversations == 1 else 's'}"
        batches = f"{self.batches} batch{'' if self.batches == 1 else 'es'}"
        return f"Retention: deleted {conversations} ({', '.join(parts) or 'nothing else'}) in {batches}"


def owner_periods() -> tuple[dict[int, int], int | None]:
    """Days kept per plan id (plans whose conversations are kept forever left out), and for users
    without a plan."""
    site = SiteSettings.current().retention_days
    plans: dict[int, int | None] = {}
    default: int | None = None
    # By id, as Plan.default() picks: the first default plan is the one of users without a plan.
    for pk, days, is_default in Plan.objects.order_by("pk").values_list("pk", "retention_days", "is_default"):
        plans[pk] = days if days is not None else site
        if is_default and default is None:
            default = pk
    planless = plans[default] if default is not None else site
    return {pk: days for pk, days in plans.items() if days is not None}, planless


def expired(now: datetime) -> QuerySet[Conversation]:
    """Conversations past their owner's period with nothing still being written in them."""
    per_plan, planless = owner_periods()
    by_days: dict[int, list[int]] = {}
    for pk, days in per_plan.items():
        by_days.setdefault(days, []).append(pk)
    past = Q(pk__in=[])  # nothing, when nothing is ever deleted
    for days, plan_ids in by_days.items():
        past |= Q(owner__plan_id__in=plan_ids, updated__lt=now - timedelta(days=days))
    if planless is not None:
        past |= Q(owner__plan__isnull=True, updated__lt=now - timedelta(days=planless))
    replying = Message.objects.filter(conversation=OuterRef("pk"), status__in=Message.ACTIVE)
    running = AgentRun.objects.filter(conversation=OuterRef("pk"), status__in=AgentRun.ACTIVE)
    return Conversation.objects.filter(past).exclude(Exists(replying)).exclude(Exists(running))


def purge_expired(now: datetime | None = None, batch: int = BATCH) -> PurgeReport:
    """Deletes every expired conversation, `batch` at a time; logs one line when it deleted any."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    now = now or timezone.now()
    report = PurgeReport()
    last = 0
    while True:
        with transaction.atomic():
            # Chosen again inside the batch's transaction, the rows locked (PostgreSQL; SQLite's
            # transaction holds the database): a send that lands first makes its conversation
            # recent, and is not deleted under it. Ascending ids: every batch makes progress.
            chosen = expired(now).filter(pk__gt=last).order_by("pk").select_for_update(of=("self",)).only("pk")
            ids = [conversation.pk for conversation in chosen[:batch]]
            if not ids:
                break
            rows = delete_conversations(ids)
        last = ids[-1]
        report.batches += 1
        report.conversations += rows.get(Conversation._meta.label, 0)
        report.rows.update(rows)
    if report.conversations:
        logger.info(report.summary())
    return report
