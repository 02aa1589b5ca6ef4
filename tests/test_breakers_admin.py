"""The "Circuit breakers" admin page: every breaker of the offered catalogue with its live state,
Force open / Force closed / Automatic for staff with the permission (POST, CSRF, checked input, the
admin named in the history), refused to everyone else; the history is read-only."""

from collections.abc import Iterator

import pytest
import redis
from django.contrib.auth.models import Permission
from django.test import Client

from breakers import circuit, control
from breakers.models import Breaker, BreakerEvent
from breakers.status import snapshot
from chat.models import ChatModel

pytestmark = pytest.mark.django_db(transaction=True)

PAGE, FORCE = "/admin/breakers/breaker/", "/admin/breakers/breaker/force/"


@pytest.fixture(autouse=True)
def catalogue(settings, transactional_db) -> Iterator[None]:
    """The demo model, and a model served by the endpoint `local` under the id `llama-3`."""
    settings.PARLEY_OPENAI_ENDPOINTS = [("local", "http://127.0.0.1:9", "")]
    settings.PARLEY_BREAKER_FAILURES, settings.PARLEY_BREAKER_COOLDOWN_SECONDS = 2, 30.0
    ChatModel.objects.create(name="local/llama-3", label="Llama 3", provider="openai", endpoint="local", remote_name="llama-3")
    ChatModel.objects.create(name="local/retired", label="Retired", provider="openai", endpoint="local", enabled=False)
    yield
    circuit.wait_for_event_writes()


def signed_in(user, **options) -> Client:  # type: ignore[no-untyped-def]
    client = Client(**options)
    client.force_login(user)
    return client


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123456")


@pytest.fixture
def operator(django_user_model):
    """Staff who may see the breakers and force them, and nothing else."""
    user = django_user_model.objects.create_user("operator", password="pw-operator-123456", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_breaker", "force_breaker"]))
    return user


@pytest.fixture
def viewer(django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw-viewer-123456", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_breaker"))
    return user


def test_the_page_lists_every_offered_models_breaker_with_its_live_state(root):
    circuit.record("local", "llama-3", ok=False, code="overloaded")
    page = signed_in(root).get(PAGE)
    html = page.content.decode()
    assert page.status_code == 200 and "Circuit breakers" in html
    rows = {(state.endpoint, state.model): state for state in snapshot()}
    assert set(rows) == {("demo", "parley-demo"), ("local", "llama-3")}  # not the disabled model
    assert (rows["local", "llama-3"].state, rows["local", "llama-3"].failures) == ("closed", 1)
    assert rows["local", "llama-3"].models == ("local/llama-3",)
    assert "llama-3" in html and "parley-demo" in html and "retired" not in html and "Force open" in html

    circuit.record("local", "llama-3", ok=False, code="overloaded")
    html = signed_in(root).get(PAGE).content.decode()
    state = next(state for state in snapshot() if state.model == "llama-3")
    assert state.state == "open" and state.failures == 2 and state.opened_at is not None and 0 < state.retry_in <= 30
    assert '<tr class="breaker-open">' in html and "probe in" in html and " UTC" in html


def test_force_open_then_closed_then_automatic_through_the_admin(operator):
    browser = signed_in(operator)
    response = browser.post(FORCE, {"endpoint": "local", "model": "llama-3", "mode": "forced_open"}, follow=True)
    assert response.status_code == 200 and "closed → forced open" in response.content.decode()
    assert circuit.check("local", "llama-3").state == "forced_open"
    assert Breaker.objects.get(endpoint="local", model="llama-3").changed_by == operator
    assert "by operator" in response.content.decode()

    browser.post(FORCE, {"endpoint": "local", "model": "llama-3", "mode": "forced_closed"})
    assert circuit.check("local", "llama-3").state == "forced_closed"
    response = browser.post(FORCE, {"endpoint": "local", "model": "llama-3", "mode": "forced_closed"}, follow=True)
    assert "already was forced closed" in response.content.decode()
    browser.post(FORCE, {"endpoint": "local", "model": "llama-3", "mode": "auto"})
    assert circuit.check("local", "llama-3").state == "closed"

    events = list(BreakerEvent.objects.order_by("id").values_list("from_state", "to_state", "by__username"))
    assert events == [
        ("closed", "forced_open", "operator"), ("forced_open", "forced_closed", "operator"),
        ("forced_closed", "closed", "operator"),
    ]


def test_a_breaker_still_forced_stays_listed_after_its_model_is_no_longer_offered(root):
    control.force("local", "llama-3", Breaker.Mode.FORCED_OPEN, by=root)
    ChatModel.objects.filter(name="local/llama-3").update(enabled=False)
    state = next(state for state in snapshot() if state.model == "llama-3")
    assert (state.state, state.models) == ("forced_open", ())
    response = signed_in(root).post(FORCE, {"endpoint": "local", "model": "llama-3", "mode": "auto"})
    assert response.status_code == 302 and circuit.check("local", "llama-3").state == "closed"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"endpoint": "local", "model": "llama-3", "mode": "sideways"}, "Select a valid choice. sideways is not one"),
        ({"endpoint": "local", "model": "retired", "mode": "forced_open"}, "There is no breaker for the model retired at the endpoint local"),
        ({"endpoint": "local", "mode": "forced_open"}, "This field is required."),
        ({"endpoint": "x" * 31, "model": "llama-3", "mode": "forced_open"}, "at most 30 characters"),
    ],
)
def test_bad_input_is_refused_with_its_reason(root, form, error):
    response = signed_in(root).post(FORCE, form)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not Breaker.objects.exists() and not BreakerEvent.objects.exists()


def test_who_may_not_force_cannot(viewer, alice, client):
    form = {"endpoint": "local", "model": "llama-3", "mode": "forced_open"}
    as_viewer = signed_in(viewer)
    page = as_viewer.get(PAGE)
    assert page.status_code == 200 and "llama-3" in page.content.decode() and "Force open" not in page.content.decode()
    assert as_viewer.post(FORCE, form).status_code == 403
    # Not staff, or not signed in: the admin's sign-in page.
    for browser in (signed_in(alice), client):
        assert browser.get(PAGE).status_code == 302 and browser.post(FORCE, form).status_code == 302
    assert circuit.check("local", "llama-3").state == "closed" and not BreakerEvent.objects.exists()


def test_staff_without_the_permission_cannot_see_the_page(django_user_model):
    clerk = django_user_model.objects.create_user("clerk", password="pw-clerk-123456", is_staff=True)
    assert signed_in(clerk).get(PAGE).status_code == 403


def test_forcing_needs_post_and_the_csrf_token(operator):
    browser = signed_in(operator, enforce_csrf_checks=True)
    assert browser.get(FORCE).status_code == 405
    form = {"endpoint": "local", "model": "llama-3", "mode": "forced_open"}
    assert browser.post(FORCE, form).status_code == 403
    page = browser.get(PAGE).content.decode()
    token = page.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    assert browser.post(FORCE, {**form, "csrfmiddlewaretoken": token}).status_code == 302
    assert circuit.check("local", "llama-3").state == "forced_open"


def test_when_redis_does_not_answer_the_page_says_so_and_forcing_changes_nothing(root, settings):
    from parley.embedded_redis import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    browser = signed_in(root)
    page = browser.get(PAGE)
    assert page.status_code == 200 and "Redis did not answer" in page.content.decode()
    response = browser.post(FORCE, {"endpoint": "local", "model": "llama-3", "mode": "forced_open"})
    assert response.status_code == 503 and "nothing was changed" in response.content.decode()
    assert not Breaker.objects.exists() and not BreakerEvent.objects.exists()


def test_the_history_is_read_only(root):
    control.force("local", "llama-3", Breaker.Mode.FORCED_OPEN, by=root)
    event = BreakerEvent.objects.get()
    browser = signed_in(root)
    listing = browser.get("/admin/breakers/breakerevent/").content.decode()
    assert "forced open in admin" in listing and "root" in listing
    assert browser.get("/admin/breakers/breakerevent/add/").status_code == 403
    assert browser.post(f"/admin/breakers/breakerevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert BreakerEvent.objects.count() == 1


def test_the_admin_index_links_the_page_and_the_history(root):
    index = signed_in(root).get("/admin/").content.decode()
    assert PAGE in index and "/admin/breakers/breakerevent/" in index and "Breaker events" in index


def test_redis_errors_reach_the_caller_of_force(root, settings):
    from parley.embedded_redis import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(redis.ConnectionError):
        control.force("local", "llama-3", Breaker.Mode.FORCED_OPEN, by=root)
    assert not Breaker.objects.exists()
