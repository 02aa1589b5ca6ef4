"""The `auto` model's router (routing/router.py): each condition of a rule, holding and not; the
first rule that applies wins, disabled ones are skipped, one whose model cannot take the message
falls through; otherwise the cheapest model that fits, priced models before unpriced ones."""

from decimal import Decimal

import pytest

from accounts.models import Plan
from accounts.plans import forget_cached_limits, limits_for
from billing.models import UsageRecord
from chat import attachments
from chat.actions import ActionError
from chat.models import ChatModel, Upload
from routing import router
from routing.models import RouteRule

pytestmark = pytest.mark.django_db

CODE = "Why does this fail?\n```python\nprint(1/0)\n```"


def model(name: str, price: str | None, window: int = 8192, vision: bool = False, **extra) -> ChatModel:
    """A model the offline demo provider serves, at a price per million tokens in and out (None: unknown)."""
    return ChatModel.objects.create(
        name=name, label=name.title(), provider="demo", context_window=window, max_output_tokens=256,
        input_price_per_million=None if price is None else Decimal(price),
        output_price_per_million=None if price is None else Decimal(price) * 4, supports_vision=vision, **extra,
    )


@pytest.fixture
def models(db) -> dict[str, ChatModel]:
    # The free demo model would win every comparison of prices: these tests set their own.
    ChatModel.objects.filter(name="parley-demo").update(enabled=False)
    return {
        "small": model("small", "0.10", window=1_000),
        "mid": model("mid", "1.00", window=16_000),
        "big": model("big", "3.00", window=200_000, vision=True),
    }


def image(name: str = "cat.png") -> Upload:
    return Upload(name=name, content_type=Upload.PNG, data=b"", width=64, height=64, tokens=100)


def text_file(name: str = "notes.txt") -> Upload:
    return Upload(name=name, content_type=Upload.TEXT, data=b"", text="some notes")


def decide(user, text: str, files: tuple[Upload, ...] = (), system: str = "") -> router.Decision:
    forget_cached_limits()  # the tests edit plans between decisions
    _, limits = limits_for(user.pk)
    return router.choose(user.pk, limits, text, list(files), attachments.turns(None, [], text, list(files)), system)


def rule(name: str, target: ChatModel, position: int = 100, **conditions) -> RouteRule:
    plans = conditions.pop("plans", [])
    made = RouteRule.objects.create(name=name, target=target, position=position, **conditions)
    made.plans.set(plans)
    router.forget_cached_rules()
    return made


# The default: the cheapest model that fits -------------------------------------------------------

def test_with_no_rule_the_cheapest_model_that_fits_answers(models, alice):
    decision = decide(alice, "Hello there")
    assert decision.model == models["small"] and decision.rule == "cheapest that fits"
    assert decision.why.startswith("Small is the cheapest model that fits: about $0.00") and "typical reply" in decision.why
    assert decision.record() == {"requested": "auto", "rule": "cheapest that fits", "why": decision.why}


def test_a_model_too_small_for_the_whole_prompt_gives_way_to_the_next_cheapest(models, alice):
    long_text = "word " * 1_000  # about 1,250 tokens: past small's room (1,000 - 256)
    assert decide(alice, long_text).model == models["mid"]
    assert decide(alice, "short", system="rules " * 1_000).model == models["mid"]  # the system prompt counts too


def test_models_with_unknown_prices_come_after_every_priced_one(models, alice):
    model("unpriced", None, window=200_000, vision=True)
    assert decide(alice, "Hello").model == models["small"]
    ChatModel.objects.filter(name="big").update(enabled=False)
    decision = decide(alice, "What is this?", (image(),))  # only the unpriced one reads images now
    assert decision.model.name == "unpriced"
    assert decision.why == "no model with a known price fits, so Unpriced answers (its price is unknown)"


def test_a_message_with_an_image_goes_to_the_cheapest_model_that_reads_images(models, alice):
    assert decide(alice, "What is this?", (image(),)).model == models["big"]
    assert decide(alice, "Summarize", (text_file(),)).model == models["small"]  # a text file needs no vision


def test_a_conversation_too_long_for_every_model_goes_to_the_cheapest_that_takes_its_newest_turns(models, alice):
    _, limits = limits_for(alice.pk)
    turns = [("user", "old " * 200_000), ("assistant", "ok"), ("user", "And now?")]
    decision = router.choose(alice.pk, limits, "And now?", [], turns, "")
    assert decision.model == models["small"] and "earliest messages are left out" in decision.why


def test_no_model_that_can_take_the_message_is_a_clear_refusal(models, alice):
    ChatModel.objects.filter(name="big").update(supports_vision=False)
    with pytest.raises(ActionError) as refused:
        decide(alice, "What is this?", (image("dog.png"),))
    assert refused.value.code == "model_cannot_see_images" and "dog.png" in refused.value.detail

    with pytest.raises(ActionError) as refused:
        decide(alice, "x" * 2_000_000)
    assert refused.value.code == "context_too_long" and "the largest has room for 199,744" in refused.value.detail

    plan = Plan.objects.get(name="Free")
    plan.allowed_models.set([ChatModel.objects.get(name="parley-demo")])  # switched off in these tests
    with pytest.raises(ActionError) as refused:
        decide(alice, "Hello")
    assert refused.value.code == "model_not_allowed"

    ChatModel.objects.update(enabled=False)
    with pytest.raises(ActionError) as refused:
        decide(alice, "Hello")
    assert refused.value.code == "unknown_model"


def test_the_plans_allowed_models_bound_the_default(models, alice):
    Plan.objects.get(name="Free").allowed_models.set([models["mid"], models["big"]])
    assert decide(alice, "Hello").model == models["mid"]


# Each condition, holding and not ---------------------------------------------------------------

def test_prompt_length_bounds(models, alice):
    rule("Long prompts", models["big"], min_prompt_tokens=500)
    rule("Short prompts", models["mid"], max_prompt_tokens=20)
    assert decide(alice, "word " * 600).rule == "Long prompts"
    assert decide(alice, "Hi").rule == "Short prompts"
    assert decide(alice, "word " * 100).rule == "cheapest that fits"  # neither holds
    ranged = decide(alice, "word " * 600)
    assert ranged.why == "the prompt is about 754 tokens (at least 500)"


def test_prompt_length_counts_the_files_and_the_system_prompt(models, alice):
    rule("Long prompts", models["big"], min_prompt_tokens=80)
    assert decide(alice, "Hi").rule == "cheapest that fits"
    assert decide(alice, "Hi", (image(),)).rule == "Long prompts"  # its 85 tokens count
    assert decide(alice, "Hi", system="be brief " * 60).rule == "Long prompts"


def test_code(models, alice):
    rule("Code questions", models["mid"], contains_code=True)
    decision = decide(alice, CODE)
    assert (decision.model, decision.rule, decision.why) == (models["mid"], "Code questions", "the message contains code")
    assert decision.explanation == "Rule “Code questions”: the message contains code"
    assert decide(alice, "Tell me about the history of printing presses.").rule == "cheapest that fits"


def test_attachments_any_file(models, alice):
    rule("With files", models["mid"], attachments=RouteRule.Attachments.FILES)
    assert decide(alice, "Summarize", (text_file(),)).rule == "With files"
    assert decide(alice, "Summarize").rule == "cheapest that fits"


def test_attachments_images(models, alice):
    rule("Pictures", models["big"], attachments=RouteRule.Attachments.IMAGES)
    assert decide(alice, "Look", (image(),)).why == "the message has images"
    assert decide(alice, "Read", (text_file(),)).rule == "cheapest that fits"


def test_the_users_plan(models, alice, bob):
    pro = Plan.objects.get(name="Pro")
    rule("Pro users", models["mid"], plans=[pro])
    bob.plan = pro
    bob.save()
    assert decide(bob, "Hello").why == "your plan is Pro"
    assert decide(alice, "Hello").rule == "cheapest that fits"  # alice has the default plan, Free
    rule("Free users", models["big"], position=200, plans=[Plan.objects.get(name="Free")])
    assert decide(alice, "Hello").rule == "Free users"


def spend(user, cost: str) -> None:
    UsageRecord.objects.create(user=user, kind="reply", provider="demo", model="mid", cost_usd=Decimal(cost), outcome="complete")


def test_budget_left_below_dollars(models, alice, bob):
    Plan.objects.filter(name="Free").update(cost_per_month=Decimal("10.00"))
    rule("Saving", models["small"], budget_left_below_usd=Decimal("2.00"), position=1)
    rule("Everyone else", models["mid"], position=2)
    spend(alice, "7.50")
    spend(bob, "8.50")
    assert decide(alice, "Hello").rule == "Everyone else"  # $2.50 left
    decision = decide(bob, "Hello")  # $1.50 left
    assert decision.rule == "Saving" and decision.why == "$1.50 (15 %) of this month's budget is left, below $2.00"


def test_budget_left_below_a_share(models, alice, bob):
    Plan.objects.filter(name="Free").update(cost_per_month=Decimal("10.00"))
    rule("Saving", models["small"], budget_left_below_percent=20, position=1)
    rule("Everyone else", models["mid"], position=2)
    spend(alice, "7.00")
    spend(bob, "9.00")
    assert decide(alice, "Hello").rule == "Everyone else"  # 30 % left
    assert decide(bob, "Hello").why == "$1.00 (10 %) of this month's budget is left, below 20 %"


def test_both_budget_conditions_must_hold(models, alice, bob):
    Plan.objects.filter(name="Free").update(cost_per_month=Decimal("100.00"))
    rule("Saving", models["small"], budget_left_below_usd=Decimal("20.00"), budget_left_below_percent=10)
    spend(alice, "85.00")  # $15 left: below $20, but 15 % is not below 10 %
    spend(bob, "95.00")
    assert decide(alice, "Hello").rule == "cheapest that fits"
    assert decide(bob, "Hello").why == "$5.00 (5 %) of this month's budget is left, below $20.00 and below 10 %"


def test_budget_conditions_never_hold_without_a_budget(models, alice):
    Plan.objects.filter(name="Free").update(cost_per_month=None)
    rule("Saving", models["mid"], budget_left_below_percent=100, budget_left_below_usd=Decimal("1000"))
    assert decide(alice, "Hello").rule == "cheapest that fits"


def test_keywords_are_whole_words_in_any_case(models, alice):
    rule("Billing", models["mid"], keywords="invoice\nrefund\nunit test")
    assert decide(alice, "Where is my INVOICE?").why == "the message mentions “invoice”"
    assert decide(alice, "a Unit   Test for this").why == "the message mentions “unit test”"
    assert decide(alice, "I collect invoices and refunds").rule == "cheapest that fits"  # not whole words


def test_conditions_are_anded_and_their_reasons_joined(models, alice):
    rule("Code with files", models["big"], contains_code=True, attachments=RouteRule.Attachments.FILES, keywords="crash")
    assert decide(alice, CODE, (text_file(),)).rule == "cheapest that fits"  # no keyword
    assert decide(alice, CODE + "\nIt crash-es", ()).rule == "cheapest that fits"  # no file
    decision = decide(alice, CODE + "\nIt crash-es", (text_file(),))
    assert decision.why == "the message has files, the message mentions “crash” and the message contains code"


def test_a_rule_without_conditions_applies_to_every_message(models, alice):
    rule("Always", models["big"])
    assert decide(alice, "Hi").why == "it applies to every message"


# Order, switches and falling through ---------------------------------------------------------

def test_the_first_rule_that_applies_wins(models, alice):
    first = rule("First", models["mid"], position=1, contains_code=True)
    rule("Second", models["big"], position=2, contains_code=True)
    assert decide(alice, CODE).rule == "First"
    first.position = 3
    first.save()
    router.forget_cached_rules()
    assert decide(alice, CODE).rule == "Second"


def test_a_disabled_rule_is_skipped(models, alice):
    rule("Off", models["big"], position=1, enabled=False)
    rule("On", models["mid"], position=2)
    assert decide(alice, "Hi").rule == "On"


def test_a_rule_whose_model_cannot_take_the_message_falls_through_and_says_so(models, alice):
    rule("Too small", models["small"], position=1, min_prompt_tokens=500)
    rule("Not in the plan", models["mid"], position=2, min_prompt_tokens=500)
    rule("Switched off", model("gone", "0.01"), position=3, min_prompt_tokens=500)
    rule("Blind", models["mid"], position=4, attachments=RouteRule.Attachments.IMAGES)
    ChatModel.objects.filter(name="gone").update(enabled=False)
    Plan.objects.get(name="Free").allowed_models.set([models["small"], models["big"]])
    decision = decide(alice, "word " * 600)
    assert decision.model == models["big"] and decision.rule == "cheapest that fits"
    assert decision.why.startswith(
        "rule “Too small” applied, but Small has room for 744 prompt tokens and this one is about 754;"
        " rule “Not in the plan” applied, but your plan does not include Mid;"
        " rule “Switched off” applied, but its model is not offered right now;"
        " Big is the cheapest model that fits"
    )
    Plan.objects.get(name="Free").allowed_models.clear()
    seen = decide(alice, "Look", (image(),))
    assert seen.model == models["big"] and seen.why.startswith("rule “Blind” applied, but Mid can't read images; ")


def test_choosing_reads_the_rules_once_in_a_while_and_the_catalogue_once(models, alice, django_assert_num_queries):
    rule("Code questions", models["mid"], contains_code=True, plans=[Plan.objects.get(name="Pro")])
    _, limits = limits_for(alice.pk)
    turns = [("user", CODE)]
    with django_assert_num_queries(3):  # the rules, their plans, the catalogue
        router.choose(alice.pk, limits, CODE, [], turns, "")
    with django_assert_num_queries(1):  # the catalogue: the rules are cached
        router.choose(alice.pk, limits, CODE, [], turns, "")
