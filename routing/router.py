"""Which model answers a message sent to `auto`, and why, in words a user can read.

`choose` tries the admins' rules (routing/models.py) in order: the first enabled rule whose
conditions all hold and whose model can take the message wins. A model can take it when it is
offered now, in the user's plan, reads the message's images if it carries any, and has room in its
context window for the whole prompt (system prompt, earlier turns and files) and its most output.
A rule whose model cannot is passed over, and the reply's explanation says so.

With no rule, the cheapest model that can take the message answers: its cost estimated from its
prices for this prompt and a typical reply. Models with unknown prices come after every priced
one: an unknown price is billed at 0 and flagged, but is no evidence that the model is cheap, and
ranking it first would send every message to whichever model nobody priced. When no model has room
for the whole conversation, the cheapest that fits its newest turns answers, the earliest ones left
out (billing/calls.py does that and says so).

It runs inside the send's transaction on the database thread: the rules are cached a few seconds
per process (as plans are, accounts/plans.py), the catalogue is one query, and the month's cost (a
Redis read, itself cached) is read only when a rule asks about the budget.
"""

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import redis
from django.conf import settings

import providers
from accounts.plans import EffectiveLimits
from billing import admission
from billing.ledger import Pricing
from chat.actions import ActionError
from chat.history import DoesNotFit, Turn, fit_history
from chat.models import ChatModel, Upload
from routing import detect
from routing.models import RouteRule

DEFAULT_RULE = "cheapest that fits"
TYPICAL_OUTPUT_TOKENS = 400  # what a reply is assumed to cost in output when models are compared
WHOLE_PROMPT_WINDOW = 10**12  # a window nothing overflows: fit_history then counts the whole prompt


@dataclass(frozen=True, slots=True)
class Decision:
    """The model that answers, the rule that chose it (DEFAULT_RULE when none did), and `why` that
    rule applied, in plain words; `explanation` says both in one sentence."""

    model: ChatModel
    rule: str
    why: str

    @property
    def explanation(self) -> str:
        return f"Rule “{self.rule}”: {self.why}"

    def record(self) -> dict[str, str]:
        """What a reply keeps in its `routing` (chat.models.Message), for its Details."""
        return {"requested": providers.AUTO, "rule": self.rule, "why": self.why}


@dataclass(frozen=True, slots=True)
class _Rule:
    """A rule as loaded: what `choose` needs of it, with its keywords compiled once."""

    name: str
    target_id: int
    min_tokens: int | None
    max_tokens: int | None
    code: bool
    attachments: str
    plans: frozenset[str]
    budget_usd: Decimal | None
    budget_percent: int | None
    keywords: re.Pattern[str] | None

    @classmethod
    def of(cls, rule: RouteRule) -> "_Rule":
        return cls(
            rule.name, rule.target_id, rule.min_prompt_tokens, rule.max_prompt_tokens, rule.contains_code,
            rule.attachments, frozenset(plan.name for plan in rule.plans.all()), rule.budget_left_below_usd,
            rule.budget_left_below_percent, detect.keyword_pattern(rule.keyword_list()),
        )


@dataclass(frozen=True, slots=True)
class _Message:
    """A message as the rules read it."""

    text: str
    prompt_tokens: int  # the whole prompt's estimate, as billing/calls.py counts it
    files: int
    images: tuple[str, ...]  # their names


# Rules change rarely and are read on every send to `auto`: a process may apply an admin's edit up
# to PARLEY_LIMITS_CACHE_SECONDS late, like an edit of a plan.
_rules: tuple[float, tuple[_Rule, ...]] | None = None


def active_rules() -> tuple[_Rule, ...]:
    """The enabled rules in order, their plans with them: two queries, at most every few seconds."""
    global _rules
    now = time.monotonic()
    if _rules is None or _rules[0] <= now:
        loaded = RouteRule.objects.filter(enabled=True).prefetch_related("plans")
        _rules = (now + settings.PARLEY_LIMITS_CACHE_SECONDS, tuple(map(_Rule.of, loaded)))
    return _rules[1]


def forget_cached_rules() -> None:
    global _rules
    _rules = None


def choose(
    user_id: int, limits: EffectiveLimits, text: str, files: Sequence[Upload], turns: list[Turn], system: str,
) -> Decision:
    """The model that answers a message sent to `auto` (`turns`: the prompt's turns, this message
    last, with their files, as chat/attachments.py makes them), or ActionError when none can."""
    catalogue = list(ChatModel.objects.offered())
    if not catalogue:
        raise ActionError("unknown_model", "No model is offered right now, so Auto has none to pick. Try again later.")
    message = _Message(
        text, fit_history(turns, system, WHOLE_PROMPT_WINDOW, 0).prompt_estimate, len(files),
        tuple(upload.name for upload in files if upload.is_image),
    )
    by_id = {model.pk: model for model in catalogue}
    budget = _Budget(user_id, limits)
    passed_over = []
    for rule in active_rules():
        reasons = _holds(rule, message, limits, budget)
        if reasons is None:
            continue
        target = by_id.get(rule.target_id)
        problem = "its model is not offered right now" if target is None else _cannot_take(target, limits, message)
        if problem is None and target is not None:
            return Decision(target, rule.name, _sentence(reasons))
        passed_over.append(f"rule “{rule.name}” applied, but {problem}")
    return _cheapest(catalogue, limits, message, turns, system, passed_over)


def _holds(rule: _Rule, message: _Message, limits: EffectiveLimits, budget: "_Budget") -> list[str] | None:
    """The rule's conditions in words when they all hold; None when one does not. The cheap ones
    first: the budget is read only when everything else holds."""
    reasons = []
    if rule.min_tokens is not None or rule.max_tokens is not None:
        if rule.min_tokens is not None and message.prompt_tokens < rule.min_tokens:
            return None
        if rule.max_tokens is not None and message.prompt_tokens > rule.max_tokens:
            return None
        reasons.append(f"the prompt is about {message.prompt_tokens:,} tokens ({_bounds(rule.min_tokens, rule.max_tokens)})")
    if rule.attachments == RouteRule.Attachments.FILES:
        if not message.files:
            return None
        reasons.append("the message has files")
    elif rule.attachments == RouteRule.Attachments.IMAGES:
        if not message.images:
            return None
        reasons.append("the message has images")
    if rule.plans:
        if limits.plan not in rule.plans:
            return None
        reasons.append(f"your plan is {limits.plan}")
    if rule.keywords is not None:
        found = rule.keywords.search(message.text)
        if found is None:
            return None
        reasons.append(f"the message mentions “{' '.join(found.group(0).split()).casefold()}”")
    if rule.code:
        if not detect.contains_code(message.text):
            return None
        reasons.append("the message contains code")
    if rule.budget_usd is not None or rule.budget_percent is not None:
        left = budget.left()
        if left is None:
            return None
        usd, percent = left
        if rule.budget_usd is not None and not usd < rule.budget_usd:
            return None
        if rule.budget_percent is not None and not percent < rule.budget_percent:
            return None
        below = " and ".join(
            [f"below ${rule.budget_usd}"] * (rule.budget_usd is not None) + [f"below {rule.budget_percent} %"] * (rule.budget_percent is not None)
        )
        reasons.append(f"${usd:.2f} ({percent:.0f} %) of this month's budget is left, {below}")
    return reasons


class _Budget:
    """What is left of the user's monthly cost budget: (USD, percent), or None without a budget;
    read once, and only if a rule asks."""

    def __init__(self, user_id: int, limits: EffectiveLimits) -> None:
        self.user_id, self.limits = user_id, limits
        self._read_yet = False
        self._left: tuple[Decimal, Decimal] | None = None

    def left(self) -> tuple[Decimal, Decimal] | None:
        if not self._read_yet:
            self._left, self._read_yet = self._read(), True
        return self._left

    def _read(self) -> tuple[Decimal, Decimal] | None:
        allowed = self.limits.cost_per_month
        if allowed is None:
            return None
        try:
            used = admission.cost_used(self.user_id)
        except redis.RedisError as error:
            # As admission itself: without the counters no call may start.
            raise ActionError("busy", "Usage limits cannot be checked right now. Try again in a few seconds.", 5.0) from error
        left = max(Decimal(0), allowed - used)
        return left, (left / allowed * 100 if allowed else Decimal(0))


def _cannot_take(model: ChatModel, limits: EffectiveLimits, message: _Message) -> str | None:
    """Why the model cannot take the whole message, or None when it can."""
    if limits.allowed_models is not None and model.pk not in limits.allowed_models:
        return f"your plan does not include {model.label}"
    if message.images and not model.supports_vision:
        return f"{model.label} can't read images"
    room = model.context_window - _most_output(model, limits)
    if message.prompt_tokens > room:
        return f"{model.label} has room for {max(0, room):,} prompt tokens and this one is about {message.prompt_tokens:,}"
    return None


def _most_output(model: ChatModel, limits: EffectiveLimits) -> int:
    """The output a call reserves (billing/calls.py), which the context window must leave room for."""
    return min(model.max_output_tokens, settings.PARLEY_MAX_OUTPUT_TOKENS, limits.max_output_tokens or 10**9)


def _cheapest(
    catalogue: list[ChatModel], limits: EffectiveLimits, message: _Message, turns: list[Turn], system: str,
    passed_over: list[str],
) -> Decision:
    allowed = [model for model in catalogue if limits.allowed_models is None or model.pk in limits.allowed_models]
    if not allowed:
        raise ActionError("model_not_allowed", "Your plan includes none of the models offered now, so Auto has none to pick.")
    seeing = [model for model in allowed if model.supports_vision] if message.images else allowed
    if not seeing:
        raise ActionError(
            "model_cannot_see_images",
            f"None of the models you may use can read images; remove the image ({', '.join(message.images)}).",
        )
    whole = [(model, message.prompt_tokens) for model in seeing if _cannot_take(model, limits, message) is None]
    fits = whole or list(_fitting_newest(seeing, limits, turns, system))
    if not fits:
        largest = max(model.context_window - _most_output(model, limits) for model in seeing)
        raise ActionError(
            "context_too_long",
            f"This message is too long for every model you may use: it needs about {message.prompt_tokens:,} tokens"
            f" (attached files included), and the largest has room for {max(0, largest):,}.",
        )
    costs = [(model, _pricing(model).cost(tokens, min(TYPICAL_OUTPUT_TOKENS, _most_output(model, limits)))) for model, tokens in fits]
    model, cost = min(costs, key=lambda pair: (not pair[0].price_known, pair[1], pair[0].sort_order, pair[0].label, pair[0].pk))
    if model.price_known:
        why = f"{model.label} is the cheapest model that fits: about {_money(cost)} for this prompt and a typical reply"
    else:
        why = f"no model with a known price fits, so {model.label} answers (its price is unknown)"
    if not whole:
        why += "; no model has room for the whole conversation, so its earliest messages are left out"
    return Decision(model, DEFAULT_RULE, "; ".join([*passed_over, why]))


def _fitting_newest(
    models: Iterable[ChatModel], limits: EffectiveLimits, turns: list[Turn], system: str,
) -> Iterable[tuple[ChatModel, int]]:
    """The models with room for the newest turns at least, with the tokens of what they would be sent."""
    for model in models:
        try:
            yield model, fit_history(turns, system, model.context_window, _most_output(model, limits)).prompt_estimate
        except DoesNotFit:
            continue


def _pricing(model: ChatModel) -> Pricing:
    return Pricing.of(model.input_price_per_million, model.output_price_per_million)


def _bounds(least: int | None, most: int | None) -> str:
    if least is not None and most is not None:
        return f"between {least:,} and {most:,}"
    return f"at least {least:,}" if least is not None else f"at most {most:,}"


def _money(cost: Decimal) -> str:
    if cost == 0:
        return "nothing"
    if cost >= Decimal("0.01"):
        return f"${cost:.2f}"
    if cost < Decimal("0.000001"):
        return "less than $0.000001"
    return f"${cost:.6f}".rstrip("0")


def _sentence(parts: list[str]) -> str:
    if not parts:
        return "it applies to every message"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

