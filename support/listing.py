"""The console's list of conversations: filters read from a query string, checked, and applied in
one query; pages by keyset (the last row's sort value and id), so page 1,000 costs what page 1 does."""

import base64
import binascii
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from accounts.models import Plan
from agents.models import AgentRun
from chat.models import Conversation, Message
from support.models import Feedback, Flag

PAGE_SIZE = 50
TEXT_MAX = 150
PROBLEM_STATUSES = (Message.Status.FAILED, Message.Status.STOPPED, Message.Status.INTERRUPTED)
SORTS = {
    "-updated": "Latest activity first",
    "updated": "Oldest activity first",
    "-created": "Newest first",
    "created": "Oldest first",
}
DEFAULT_SORT = "-updated"


class BadFilter(ValueError):
    """A filter's value does not parse; its message names the field and says why."""


@dataclass(frozen=True)
class Filters:
    user: str = ""
    since: dt.date | None = None
    until: dt.date | None = None
    model: str = ""
    provider: str = ""
    status: str = ""
    error_code: str = ""
    plan: int | None = None
    flagged: bool = False
    negative: bool = False
    has_runs: bool = False
    sort: str = DEFAULT_SORT

    def as_query(self) -> dict[str, str]:
        """The filters as a query string's fields (defaults left out), for links and the record."""
        query: dict[str, str] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value in (None, "", False) or (item.name == "sort" and value == DEFAULT_SORT):
                continue
            query[item.name] = "1" if value is True else str(value)
        return query

    @property
    def active(self) -> bool:
        return bool(replace(self, sort=DEFAULT_SORT).as_query())


def parse(params: Mapping[str, str]) -> Filters:
    """Filters from a GET query; raises BadFilter on the first value that does not parse."""
    values: dict[str, Any] = {}
    for name in ("user", "model", "provider", "error_code"):
        text = params.get(name, "").strip()
        if len(text) > TEXT_MAX:
            raise BadFilter(f"{name}: at most {TEXT_MAX} characters.")
        values[name] = text
    for name in ("since", "until"):
        text = params.get(name, "").strip()
        if text:
            try:
                values[name] = dt.date.fromisoformat(text)
            except ValueError:
                raise BadFilter(f"{name}: a date as YYYY-MM-DD.") from None
    status = params.get("status", "").strip()
    if status and status not in PROBLEM_STATUSES:
        raise BadFilter(f"status: one of {', '.join(PROBLEM_STATUSES)}.")
    values["status"] = status
    plan = params.get("plan", "").strip()
    if plan:
        if not plan.isdigit():
            raise BadFilter("plan: a plan's id.")
        values["plan"] = int(plan)
    for name in ("flagged", "negative", "has_runs"):
        values[name] = params.get(name, "") in {"1", "on", "true"}
    sort = params.get("sort", "").strip() or DEFAULT_SORT
    if sort not in SORTS:
        raise BadFilter(f"sort: one of {', '.join(SORTS)}.")
    values["sort"] = sort
    filters = Filters(**values)
    if filters.since and filters.until and filters.since > filters.until:
        raise BadFilter("since: must not be after until.")
    return filters


def describe(filters: Filters, query: str = "") -> str:
    """What was asked, for the audit record: the search words and the filters as the address had them."""
    parts = [f"q={query}"] if query else []
    parts += [f"{name}={value}" for name, value in filters.as_query().items()]
    return " ".join(parts)


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def conversations(filters: Filters) -> QuerySet[Conversation]:
    """Every conversation the filters let through, unordered."""
    rows = Conversation.objects.all()
    if filters.user:
        rows = rows.filter(Q(owner__username__icontains=filters.user) | Q(owner__email__iexact=filters.user))
    if filters.since:
        rows = rows.filter(updated__gte=_day_start(filters.since))
    if filters.until:
        rows = rows.filter(created__lt=_day_start(filters.until + dt.timedelta(days=1)))
    if filters.plan is not None:
        rows = rows.filter(owner__plan_id=filters.plan)
    messages = Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.ASSISTANT)
    if filters.model:
        rows = rows.filter(Exists(messages.filter(model=filters.model)))
    if filters.provider:
        rows = rows.filter(Exists(messages.filter(provider=filters.provider)))
    if filters.status:
        rows = rows.filter(Exists(messages.filter(status=filters.status)))
    if filters.error_code:
        rows = rows.filter(Exists(messages.filter(error_code=filters.error_code)))
    if filters.flagged:
        rows = rows.filter(Exists(Flag.objects.filter(conversation=OuterRef("pk"), cleared_at__isnull=True)))
    if filters.negative:
        rows = rows.filter(Exists(Feedback.objects.filter(conversation=OuterRef("pk"), rating=Feedback.Rating.DOWN)))
    if filters.has_runs:
        rows = rows.filter(Exists(AgentRun.objects.filter(conversation=OuterRef("pk"))))
    return rows


def plan_label(user: Any, default: Plan | None) -> str:
    """The user's plan by name; a user without one has the default plan, as every limit does."""
    if user.plan_id:
        return user.plan.name
    return f"{default.name} (default)" if default else "none"


def mark(rows: list[Conversation]) -> None:
    """Each row's marks (flagged, negative feedback, a reply failed, stopped or interrupted), by
    three small queries on the page's ids. As subqueries of the list, PostgreSQL would read every
    problem message of the site for each page."""
    ids = [row.pk for row in rows]
    flagged = set(Flag.objects.filter(conversation_id__in=ids, cleared_at__isnull=True).values_list("conversation_id", flat=True))
    negative = set(
        Feedback.objects.filter(conversation_id__in=ids, rating=Feedback.Rating.DOWN).values_list("conversation_id", flat=True)
    )
    problem = set(
        Message.objects.filter(conversation_id__in=ids, status__in=PROBLEM_STATUSES).values_list("conversation_id", flat=True)
    )
    default = Plan.default() if any(not row.owner.plan_id for row in rows) else None
    for row in rows:
        row.is_flagged, row.has_negative, row.has_problem = row.pk in flagged, row.pk in negative, row.pk in problem
        row.plan_label = plan_label(row.owner, default)


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: after the row with this sort value and id."""

    value: dt.datetime
    id: int

    def encode(self) -> str:
        raw = f"{self.value.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            value, _, ident = raw.partition("|")
            moment = dt.datetime.fromisoformat(value)
            if moment.tzinfo is None or not ident.isdigit():
                raise ValueError
            return cls(moment, int(ident))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise BadFilter("after: not a page of this list.") from None


@dataclass
class Page:
    rows: list[Conversation]
    next: Cursor | None
    filters: Filters
    first: bool = field(default=True)


def page(filters: Filters, after: Cursor | None = None, size: int = PAGE_SIZE) -> Page:
    """One page, in the filters' order; `next` starts the following page."""
    column = filters.sort.lstrip("-")
    descending = filters.sort.startswith("-")
    rows = conversations(filters).select_related("owner", "owner__plan", "model")
    if after is not None:
        beyond = "lt" if descending else "gt"
        # The first condition alone is one the index on the sort column can start from; written only
        # as "(a < v) or (a = v and id < i)" the database would read the list from its top each time.
        rows = rows.filter(**{f"{column}__{beyond}e": after.value}).filter(
            Q(**{f"{column}__{beyond}": after.value}) | Q(**{f"id__{beyond}": after.id})
        )
    order = (f"-{column}", "-id") if descending else (column, "id")
    found = list(rows.order_by(*order)[: size + 1])
    more = len(found) > size
    found = found[:size]
    mark(found)
    following = Cursor(getattr(found[-1], column), found[-1].pk) if more else None
    return Page(found, following, filters, first=after is None)
