"""The admins' usage page (ledger per day, per user, per model, refusals) and the user list's bulk
actions: change plan, reset usage counters."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from decimal import Decimal

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import CounterReset, Plan
from accounts.plans import EffectiveLimits
from billing import charts, quotas, reports
from billing.models import UsageRecord

URL = "/admin/usage/"


def nothing_used(user_id, windows):
    return (0, 0, 0, 0, 0)


def at(days_ago: int, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    """A moment `days_ago` UTC days before today (the page's own today)."""
    day = reports.last_days()[-1] - timedelta(days=days_ago)
    return datetime.combine(day, clock(hour, minute, second), tzinfo=UTC)


def record(user, created, model="big-model", prompt=0, completion=0, cost="0", kind="reply"):
    return UsageRecord.objects.create(
        user=user, kind=kind, provider="demo", model=model, prompt_tokens=prompt, completion_tokens=completion,
        cost_usd=Decimal(cost), outcome="complete", created=created,
    )


@pytest.fixture
def ledger(alice, bob):
    """Alice spends more than Bob, over two days, on two models; some usage is outside the 30 days."""
    record(alice, at(0, 0, 0, 1), prompt=100, completion=50, cost="0.50")
    record(alice, at(3), prompt=1000, cost="1.25")
    record(alice, at(29, 0, 0, 0), model="small-model", prompt=7, cost="0.01", kind="title")  # first moment of the window
    record(bob, at(0), model="small-model", prompt=10, completion=10, cost="0.25")
    record(bob, at(30, 23, 59, 59), prompt=99_999, cost="9.00")  # the last moment before the window
    record(bob, at(40), prompt=5000, cost="3.00")


@pytest.mark.django_db
def test_the_page_sums_tokens_and_cost_per_utc_day_for_everyone(admin_client, ledger):
    response = admin_client.get(URL)
    assert response.status_code == 200
    report = response.context["report"]
    assert len(report.days) == 30 and report.days[-1].day == reports.last_days()[-1]
    today, three_days_ago, first = report.days[-1], report.days[-4], report.days[0]
    assert (today.tokens, today.cost, today.calls) == (170, Decimal("0.75"), 2)
    assert (three_days_ago.tokens, three_days_ago.cost) == (1000, Decimal("1.25"))
    assert (first.tokens, first.cost) == (7, Decimal("0.01"))
    assert sum(day.calls for day in report.days) == report.calls == 4  # nothing older than 30 days
    assert report.tokens == 1177 and report.cost == Decimal("2.01")
    html = response.content.decode()
    assert html.count('<svg class="bar-chart"') == 2  # no refusals yet: no third chart
    assert f"<title>{today.day.isoformat()}: 170 tokens</title>" in html
    assert f"<title>{three_days_ago.day.isoformat()}: $1.25</title>" in html
    assert f"<title>{report.days[-2].day.isoformat()}: 0 tokens</title>" in html


@pytest.mark.django_db
def test_top_users_are_ordered_by_cost_and_link_to_their_pages(admin_client, ledger, alice, bob):
    response = admin_client.get(URL)
    top = response.context["top_users"]
    assert [(row.username, row.tokens, row.cost, row.calls) for row in top] == [
        ("alice", 1157, Decimal("1.76"), 3), ("bob", 20, Decimal("0.25"), 1),
    ]
    html = response.content.decode()
    assert f'href="/admin/accounts/user/{alice.pk}/change/"' in html
    assert f'href="/admin/usage/?user={bob.pk}"' in html
    assert html.index(">alice</a>") < html.index(">bob</a>")


@pytest.mark.django_db
def test_the_models_split_calls_tokens_cost_and_share(admin_client, ledger):
    models = admin_client.get(URL).context["report"].models
    assert [(m.model, m.calls, m.tokens, m.cost) for m in models] == [
        ("big-model", 2, 1150, Decimal("1.75")), ("small-model", 2, 27, Decimal("0.26")),
    ]
    assert models[0].share == pytest.approx(175 / 2.01) and models[1].share == pytest.approx(26 / 2.01)


@pytest.mark.django_db
def test_one_users_view_counts_only_their_usage(admin_client, ledger, bob):
    response = admin_client.get(URL, {"user": bob.pk})
    assert response.status_code == 200 and response.context["chosen"] == bob
    report = response.context["report"]
    assert (report.tokens, report.cost, report.calls) == (20, Decimal("0.25"), 1)
    assert [m.model for m in report.models] == ["small-model"]
    html = response.content.decode()
    assert "Usage of bob" in html and f'<option value="{bob.pk}" selected>bob</option>' in html


@pytest.mark.django_db
@pytest.mark.parametrize(("value", "message"), [
    ("abc", "is not a user id"), ("999999", "There is no user with id 999999"),
    ("99999999999999999999999", "is not a user id"), ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
])
def test_a_bad_user_gets_a_clear_message(admin_client, value, message):
    response = admin_client.get(URL, {"user": value})
    assert response.status_code == 404
    assert message in response.content.decode() and "<b>x" not in response.content.decode()


@pytest.mark.django_db
def test_the_page_needs_staff_with_permission_to_view_usage(alice, django_user_model):
    client = Client()
    assert client.get(URL)["Location"] == "/admin/login/?next=/admin/usage/"
    client.force_login(alice)
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"] == "/admin/login/?next=/admin/usage/"
    staff = django_user_model.objects.create_user("helper", password="helper-pass-123456", is_staff=True)
    client.force_login(staff)
    assert client.get(URL).status_code == 403


@pytest.mark.django_db
def test_the_admin_index_and_the_ledger_link_to_the_page(admin_client):
    assert f'href="{URL}"' in admin_client.get("/admin/").content.decode()
    assert f'href="{URL}"' in admin_client.get("/admin/billing/usagerecord/").content.decode()


@pytest.mark.django_db
def test_the_number_of_queries_does_not_grow_with_the_ledger(admin_client, alice, django_user_model):
    record(alice, at(1), prompt=1)
    with CaptureQueriesContext(connection) as small:
        admin_client.get(URL)
    for index in range(12):
        user = django_user_model.objects.create_user(f"user{index}")
        for days_ago in range(0, 30, 4):
            record(user, at(days_ago), model=f"model-{index % 5}", prompt=index + days_ago, cost="0.01")
    with CaptureQueriesContext(connection) as large:
        admin_client.get(URL)
    assert len(large) == len(small)


@pytest.mark.django_db
def test_refusals_show_per_day_per_limit_and_per_user(admin_client, redis_client, alice, bob):
    one_a_minute, now = EffectiveLimits(plan="t", requests_per_minute=1), time.time()
    for _ in range(3):
        quotas.admit(redis_client, alice.pk, one_a_minute, 0, Decimal(0), uuid.uuid4().hex, nothing_used, now=now)
    quotas.admit(redis_client, bob.pk, EffectiveLimits(plan="t", tokens_per_day=10), 50, Decimal(0), "b", nothing_used)
    response = admin_client.get(URL)
    refusals = response.context["refusals"]
    today = reports.last_days()[-1]
    assert refusals.total == 3 and refusals.per_day[-1] == (today, 3)
    assert refusals.by_limit == [("requests_per_minute", 2), ("tokens_per_day", 1)]
    assert refusals.by_user == [(alice.pk, "alice", 2), (bob.pk, "bob", 1)]
    html = response.content.decode()
    assert f"<title>{today.isoformat()}: 3 refused</title>" in html and "<code>tokens_per_day</code>" in html
    alone = admin_client.get(URL, {"user": bob.pk}).context["refusals"]
    assert alone.total == 1 and alone.by_limit == [("tokens_per_day", 1)]


@pytest.mark.django_db
def test_without_redis_the_page_says_refusals_are_unavailable(admin_client, ledger, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    response = admin_client.get(URL)
    assert response.status_code == 200 and response.context["refusals"] is None
    assert "Refusal counts unavailable" in response.content.decode()
    assert response.context["report"].calls == 4


def test_charts_escape_their_labels_and_draw_one_bar_each():
    svg = charts.bar_chart([("<script>", 3.0), ("b&b", 0.0)], title="T <x>", axis=str, tip=lambda v: f"{v:.0f}")
    assert "<script>" not in svg and "&lt;script&gt;: 3" in svg and "b&amp;b: 0" in svg
    assert svg.count("<rect") == 2 and "T &lt;x&gt;" in svg


def test_chart_gridlines_fall_on_round_numbers():
    assert charts.nice_step(170) == 50
    assert charts.nice_step(0.75) == 0.2
    assert charts.nice_step(3, smallest=1) == 1
    assert charts.nice_step(0, smallest=1) == 1


@pytest.mark.django_db
def test_change_plan_asks_for_the_plan_then_moves_the_users_and_logs_it(admin_client, alice, bob):
    pro = Plan.objects.get(name="Pro")
    chosen = {"action": "change_plan", "_selected_action": [alice.pk, bob.pk]}
    form = admin_client.post("/admin/accounts/user/", chosen)
    assert form.status_code == 200
    html = form.content.decode()
    assert "New plan" in html and "Default plan (now Free)" in html and f'value="{pro.pk}"' in html
    alice.refresh_from_db()
    assert alice.plan is None  # nothing changes before the confirmation
    done = admin_client.post("/admin/accounts/user/", {**chosen, "apply": "1", "plan": pro.pk}, follow=True)
    assert "2 users moved to the Pro plan." in done.content.decode()
    alice.refresh_from_db()
    bob.refresh_from_db()
    assert alice.plan == pro and bob.plan == pro
    entries = LogEntry.objects.filter(action_flag=CHANGE, object_id__in=[str(alice.pk), str(bob.pk)])
    assert sorted(entry.change_message for entry in entries) == ["Changed plan: default plan → Pro"] * 2
    admin_client.post("/admin/accounts/user/", {"action": "change_plan", "_selected_action": [alice.pk],
                                                "apply": "1", "plan": ""})
    alice.refresh_from_db()
    assert alice.plan is None
    assert LogEntry.objects.filter(object_id=str(alice.pk), change_message="Changed plan: Pro → default plan").exists()


@pytest.mark.django_db
def test_reset_counters_records_who_and_when_and_drops_earlier_usage(admin_client, admin_user, redis_client, alice, bob):
    record(alice, datetime.now(UTC), prompt=400, completion=100, cost="0.10")
    record(bob, datetime.now(UTC), prompt=30)
    quotas.admit(redis_client, alice.pk, EffectiveLimits(plan="t"), 10, Decimal(0), "a")  # seeds her counters
    windows = quotas.Windows.at(time.time())
    assert quotas.ledger_totals(alice.pk, windows)[2:4] == (500, 500)
    response = admin_client.post("/admin/accounts/user/", {"action": "reset_usage_counters", "_selected_action": [alice.pk]},
                                 follow=True)
    assert "Usage counters of 1 user reset." in response.content.decode()
    reset = CounterReset.objects.get()
    assert (reset.user, reset.by) == (alice, admin_user)
    assert LogEntry.objects.filter(object_id=str(alice.pk), change_message="Reset usage counters").count() == 1
    assert quotas.ledger_totals(alice.pk, quotas.Windows.at(time.time()))[2:] == (0, 0, 0)
    assert quotas.ledger_totals(bob.pk, quotas.Windows.at(time.time()))[2] == 30  # not chosen: untouched
    assert not list(redis_client.scan_iter(f"{quotas.user_base(alice.pk)}:tok:*"))
    trail = admin_client.get("/admin/accounts/counterreset/")
    assert trail.status_code == 200 and "alice" in trail.content.decode()
    assert admin_client.get("/admin/accounts/counterreset/add/").status_code == 403
    assert admin_client.post(f"/admin/accounts/counterreset/{reset.pk}/delete/", {"post": "yes"}).status_code == 403


@pytest.mark.django_db
def test_a_reset_without_redis_is_recorded_and_says_it_must_be_redone(admin_client, alice, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = admin_client.post("/admin/accounts/user/", {"action": "reset_usage_counters", "_selected_action": [alice.pk]},
                                 follow=True)
    assert response.status_code == 200
    assert "Redis could not be reached" in response.content.decode()
    assert CounterReset.objects.filter(user=alice).count() == 1
    assert LogEntry.objects.filter(object_id=str(alice.pk), change_message__startswith="Reset usage counters").exists()


def test_old_ledger_addresses_lead_to_the_billing_app(admin_client):
    response = admin_client.get("/admin/chat/usagerecord/?kind__exact=title")
    assert response.status_code == 301 and response["Location"] == "/admin/billing/usagerecord/?kind__exact=title"
    assert admin_client.get("/admin/chat/costalert/").status_code == 301
