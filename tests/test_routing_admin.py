"""Routing rules in Django admin: a rule's form refuses what cannot work (least above most, a share
past 100 %, keywords that are no words, `auto` as its model) with words, cleans its keywords, and a
saved rule applies at once in this process; the catalogue keeps the `auto` row's model fields out
of reach."""

import pytest
from django.test import Client

from accounts.models import Plan
from chat.models import ChatModel
from routing import router
from routing.models import RouteRule

pytestmark = pytest.mark.django_db

ADD = "/admin/routing/routerule/add/"


@pytest.fixture
def admin_client_(django_user_model) -> Client:
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123456")
    client = Client()
    client.force_login(admin)
    return client


def form(**changes) -> dict[str, str]:
    data = {
        "name": "Code questions", "position": "10", "enabled": "on", "target": str(ChatModel.objects.get(name="parley-demo").pk),
        "min_prompt_tokens": "", "max_prompt_tokens": "", "attachments": "", "keywords": "",
        "budget_left_below_usd": "", "budget_left_below_percent": "",
    }
    data.update(changes)
    return {name: value for name, value in data.items() if value is not None}


def errors_of(response) -> str:
    assert response.status_code == 200, "the form was accepted"
    return " ".join(str(error) for error in response.context["adminform"].form.errors.values())


def test_a_valid_rule_is_saved_with_its_keywords_cleaned_and_applies_at_once(admin_client_, alice):
    from accounts.plans import limits_for

    _, limits = limits_for(alice.pk)
    assert router.choose(alice.pk, limits, "my invoice", [], [("user", "my invoice")], "").rule == "cheapest that fits"
    response = admin_client_.post(ADD, form(keywords="Invoice, REFUND\n  unit   test\ninvoice", contains_code=None))
    assert response.status_code == 302, errors_of(response)
    rule = RouteRule.objects.get()
    assert rule.keywords == "invoice\nrefund\nunit test" and not rule.contains_code
    assert router.choose(alice.pk, limits, "my invoice", [], [("user", "my invoice")], "").rule == "Code questions"
    listing = admin_client_.get("/admin/routing/routerule/").content.decode()
    assert "mentions invoice, refund, unit test" in listing


def test_the_least_tokens_cannot_be_above_the_most(admin_client_):
    errors = errors_of(admin_client_.post(ADD, form(min_prompt_tokens="2000", max_prompt_tokens="1000")))
    assert "At most 1,000 tokens is below the least, 2,000." in errors
    assert not RouteRule.objects.exists()


def test_a_share_of_the_budget_is_0_to_100(admin_client_):
    assert "less than or equal to 100" in errors_of(admin_client_.post(ADD, form(budget_left_below_percent="101")))
    assert "greater than or equal to 0" in errors_of(admin_client_.post(ADD, form(budget_left_below_percent="-1")))
    assert "greater than or equal to 0" in errors_of(admin_client_.post(ADD, form(budget_left_below_usd="-2")))
    assert admin_client_.post(ADD, form(budget_left_below_percent="100")).status_code == 302


def test_keywords_that_are_no_words_are_refused(admin_client_):
    assert "no letter or digit" in errors_of(admin_client_.post(ADD, form(keywords="refund, ***")))
    assert "longer than 60" in errors_of(admin_client_.post(ADD, form(keywords="x" * 61)))


def test_auto_cannot_be_a_rules_model(admin_client_):
    auto = ChatModel.objects.get(name="auto")
    errors = errors_of(admin_client_.post(ADD, form(target=str(auto.pk))))
    assert "Select a valid choice" in errors  # not among the choices at all
    page = admin_client_.get(ADD).content.decode()
    assert "Auto (picks a model for each message)</option>" not in page and "Parley demo (offline)</option>" in page
    rule = RouteRule(name="Sneaky", target=auto)
    with pytest.raises(Exception, match="Auto cannot be a rule's model"):
        rule.full_clean()


def test_a_rule_names_plans_and_needs_a_unique_name(admin_client_):
    pro = Plan.objects.get(name="Pro")
    assert admin_client_.post(ADD, form(plans=[str(pro.pk)])).status_code == 302
    assert list(RouteRule.objects.get().plans.all()) == [pro]
    assert "already exists" in errors_of(admin_client_.post(ADD, form()))


def test_the_catalogue_keeps_the_auto_rows_model_fields_out_of_reach(admin_client_):
    auto = ChatModel.objects.get(name="auto")
    page = admin_client_.get(f"/admin/chat/chatmodel/{auto.pk}/change/").content.decode()
    assert 'name="label"' in page and 'name="enabled"' in page and 'name="sort_order"' in page
    for field in ("provider", "input_price_per_million", "context_window", "supports_vision", "is_default", "name"):
        assert f'name="{field}"' not in page, field
    assert "Delete" not in page.split('class="submit-row"', 1)[1].split("</div>", 1)[0]
    assert admin_client_.post(f"/admin/chat/chatmodel/{auto.pk}/delete/", {"post": "yes"}).status_code == 403

    listing = admin_client_.get("/admin/chat/chatmodel/").content.decode()
    row = next(line for line in listing.split("<tr") if "Auto (picks a model" in line)
    assert 'name="form-0-input_price_per_million"' in row and "disabled" in row.split("input_price_per_million", 1)[1][:200]
    unknown = admin_client_.get("/admin/chat/chatmodel/?price=unknown").content.decode()
    assert "Auto (picks a model" not in unknown
