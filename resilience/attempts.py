"""The run step of the one model-call path: a provider attempt, retried and failed over until
something reaches the caller.

Before the first token nothing has reached anyone, so a retryable failure (429, 5xx, 529, a hang
before the first token, a cut before any text) is tried again after a backoff (resilience/retry.py),
and when the model's tries are spent, or its circuit breaker (breakers/circuit.py) is open, the
next model of its failover chain is admitted at its own price and tried. Once text or a tool call
has been delivered, a failure ends the call as it is: it is never re-run behind the reader's back.

Every attempt that failed before its first token is kept in `failed`; the caller writes a ledger
row for each (billed nothing: the provider produced nothing) beside the row of the attempt that
answered (billing/calls.py).
"""

import asyncio
import dataclasses
import logging
import time
from contextlib import aclosing
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind

from billing import ledger
from billing.quotas import Reservation
from breakers import circuit
from chat.actions import ActionError
from chat.models import ChatModel
from providers import get_provider, new_provider
from providers.base import (
    ChatRequest, CollectedReply, ErrorCode, Finish, Provider, StreamError, StreamEvent, TextDelta, ToolCall, Usage,
    collect_events,
)
from observability import tracing
from resilience import cache
from resilience.retry import Policy, hung

if TYPE_CHECKING:
    from billing.calls import Admitted

logger = logging.getLogger(__name__)

# Failures that say nothing about the request: worth another model of the chain.
NOT_THE_REQUESTS_FAULT = {ErrorCode.RATE_LIMITED, ErrorCode.OVERLOADED, ErrorCode.TIMEOUT, ErrorCode.PROVIDER_UNAVAILABLE}


@dataclass(frozen=True, slots=True)
class Target:
    """One model a call may be answered by, admitted: what it is sent, and what its ledger row and
    reservation are."""

    model: ChatModel
    request: ChatRequest
    call: ledger.Call
    reservation: Reservation | None = None

    @property
    def endpoint(self) -> str:
        """The breaker's endpoint: the model's endpoint, or its provider for one added by hand."""
        return self.model.endpoint or self.model.provider

    @classmethod
    def of(
        cls, admitted: "Admitted", system: str, messages: list[dict[str, Any]] | None = None,
        tools: tuple[dict[str, Any], ...] = (),
    ) -> "Target":
        """An admitted call as attempts run it: its model's endpoint, key, temperature and output
        cap; sent the history `billing/calls.admit` fitted, unless the caller has `messages` of its own."""
        model = admitted.model
        base_url, api_key = model.route()
        request = ChatRequest(
            model=model.model_id, messages=admitted.fitted.messages if messages is None else messages, system=system,
            max_output_tokens=admitted.max_output, base_url=base_url, api_key=api_key, tools=tools,
            temperature=None if model.temperature is None else float(model.temperature),
        )
        return cls(model, request, admitted.call, admitted.reservation)

    def with_options(self, options: dict[str, Any]) -> "Target":
        """The same target with request fields a client set itself (temperature, stop, tool choice)."""
        return dataclasses.replace(self, request=dataclasses.replace(self.request, **options)) if options else self


@dataclass(frozen=True, slots=True)
class Attempt:
    """An attempt that failed before its first token: the ledger and the reply keep it."""

    number: int
    target: Target
    code: str
    detail: str
    duration_ms: int

    @property
    def call(self) -> ledger.Call:
        return self.target.call

    def as_dict(self) -> dict[str, object]:
        return {"attempt": self.number, "model": self.target.model.name, "code": self.code, "ms": self.duration_ms}


@dataclass(frozen=True, slots=True)
class Switched:
    """The call moved to the next model of the chain before anything reached anyone."""

    target: Target
    left: ChatModel
    reason: str  # in words, e.g. "its provider is overloaded"


Readmit = Callable[[ChatModel, Target], Awaitable[Target]]  # raises ActionError when the model cannot take the call


REASONS = {
    ErrorCode.RATE_LIMITED: "its provider was rate-limiting requests",
    ErrorCode.OVERLOADED: "its provider was overloaded",
    ErrorCode.TIMEOUT: "it did not start answering in time",
    ErrorCode.PROVIDER_UNAVAILABLE: "its provider could not be reached",
    ErrorCode.CONTEXT_TOO_LONG: "the conversation is too long for it",
}
BREAKER_OPEN = "its provider has been failing (circuit breaker open)"


@dataclass(slots=True)
class Run:
    """One call's attempts. Iterate `events()`; afterwards `target` is the model that answered (or
    failed last), `number` the last attempt's number (0: no provider was called), and `failed` the
    attempts that came to nothing before it."""

    target: Target
    chain: Sequence[ChatModel] = ()
    readmit: Readmit | None = None
    policy: Policy = field(default_factory=Policy.from_settings)
    provider_for: Callable[[str], Provider] = get_provider
    number: int = 0
    failed: list[Attempt] = field(default_factory=list)
    delivered: bool = False
    switches: list[Switched] = field(default_factory=list)
    target_tried: bool = False  # an attempt of the current target was made
    cache_client: aioredis.Redis | None = None  # the response cache, for a model that opted in (resilience/cache.py)
    cached: cache.Hit | None = None
    cache_key: str = ""

    async def events(self) -> AsyncIterator[StreamEvent | Switched]:
        if self.cache_client is not None and cache.eligible(self.target.model, self.target.request):
            self.cache_key = cache.key_of(self.target.model, self.target.request)
            self.cached = await cache.lookup(self.cache_client, self.cache_key)
            if self.cached is not None:
                self.delivered = True
                async for event in cache.replay(self.cached):
                    yield event
                return
        started = time.monotonic()
        remaining = list(self.chain)
        while True:
            gate = await circuit.acheck(self.target.endpoint, self.target.request.model)
            last: StreamError | None = None
            reason = ""
            if not gate.allowed:
                reason = BREAKER_OPEN
                last = StreamError(
                    ErrorCode.PROVIDER_UNAVAILABLE, f"Circuit breaker open for {self.target.model.name}", gate.retry_in or None
                )
            tries = 0
            while gate.allowed:
                tries += 1
                self.number += 1
                self.target_tried = True
                began = time.monotonic()
                last = None
                provider = self.provider_for(self.target.model.provider)
                span = ProviderSpan.start(self.target, self.number)
                try:
                    async with aclosing(provider.stream(self.target.request)) as stream:
                        async for event in stream:
                            span.saw(event)
                            if not self.delivered:
                                if isinstance(event, StreamError):
                                    last = event
                                    break
                                if isinstance(event, (TextDelta, ToolCall)):
                                    self.delivered = True
                                    await circuit.arecord(self.target.endpoint, self.target.request.model, True, probe=gate.probe)
                            elif isinstance(event, StreamError) and event.retryable:
                                # Cut off mid-reply: the reply fails as it is, and the provider counts a failure.
                                await circuit.arecord(self.target.endpoint, self.target.request.model, False, event.code)
                            yield event
                finally:
                    span.end()
                if last is None:
                    if not self.delivered:  # an empty answer is still an answer
                        await circuit.arecord(self.target.endpoint, self.target.request.model, True, probe=gate.probe)
                    return
                self.failed.append(Attempt(self.number, self.target, str(last.code), last.message, _ms_since(began)))
                # Only the provider's own troubles count against it; a refused request says nothing of its health.
                await circuit.arecord(
                    self.target.endpoint, self.target.request.model, not last.retryable, str(last.code), probe=gate.probe
                )
                delay = self._retry_delay(tries, last, started, bool(remaining))
                if delay is None:
                    break
                logger.info("Retrying %s in %.2fs after %s", self.target.model.name, delay, last.code)
                await asyncio.sleep(delay)
                gate = await circuit.acheck(self.target.endpoint, self.target.request.model)
                if not gate.allowed:
                    reason = BREAKER_OPEN
            assert last is not None
            following = await self._next_target(remaining, last, started)
            if following is None:
                yield last
                return
            switched = Switched(following, self.target.model, reason or REASONS.get(last.code, "it failed"))
            self.switches.append(switched)
            self.target, self.target_tried = following, False
            yield switched

    def _retry_delay(self, tries: int, error: StreamError, started: float, has_next: bool) -> float | None:
        if hung(error) and has_next:
            return None
        delay = self.policy.delay(tries, error)
        if delay is None or time.monotonic() + delay - started > self.policy.deadline_seconds:
            return None
        return delay

    async def _next_target(self, remaining: list[ChatModel], error: StreamError, started: float) -> Target | None:
        """The next model of the chain that can take the call, admitted at its own price; None: the
        call ends with `error`. Only failures that are not the request's fault go down the chain,
        and a conversation too long for one model only to a model with a larger context window."""
        if self.readmit is None or time.monotonic() - started > self.policy.deadline_seconds:
            return None
        if error.code == ErrorCode.CONTEXT_TOO_LONG:
            remaining[:] = [model for model in remaining if model.context_window > self.target.model.context_window]
        elif error.code not in NOT_THE_REQUESTS_FAULT:
            return None
        while remaining:
            model = remaining.pop(0)
            previous = self.target
            # Readmission gives the previous reservation back first, whether or not the next model
            # takes the call: it must not be settled a second time when the call ends.
            self.target = dataclasses.replace(previous, reservation=None)
            try:
                return await self.readmit(model, previous)
            except ActionError as refused:
                logger.info("Failover to %s refused: %s", model.name, refused.code)
        return None

    @property
    def settled_attempt(self) -> int:
        """The attempt number the call's own ledger row carries: the last attempt of the model that
        answered (or failed last); 0 when its breaker let no attempt through."""
        return self.number if self.target_tried else 0

    @property
    def separate_attempts(self) -> list[Attempt]:
        """The failed attempts that need ledger rows of their own: all but the one the call's row is."""
        if self.failed and self.target_tried and self.failed[-1].number == self.number:
            return self.failed[:-1]
        return list(self.failed)

    def routing(self) -> dict[str, object]:
        """What the reply records of its attempts (Message.routing): none when the first try answered."""
        out: dict[str, object] = {}
        if self.cached is not None:
            out["cached"] = self.cached.as_routing(self.cache_key)
        if self.failed:
            out["attempts"] = [attempt.as_dict() for attempt in self.failed]
        if self.switches:
            first, last = self.switches[0], self.switches[-1]
            out["failover"] = {
                "from": first.left.name, "from_label": first.left.label, "to": last.target.model.name,
                "to_label": last.target.model.label, "why": first.reason,
            }
        return out


@dataclass(slots=True)
class ProviderSpan:
    """One provider call's span, with the GenAI semantic conventions' attributes: the model asked
    and the one that answered, the tokens the provider reported, an error's code. Never text."""

    span: Span
    requested: str = ""
    recording: bool = False  # read once per event: the off case costs one attribute read per token

    @classmethod
    def start(cls, target: Target, attempt: int) -> "ProviderSpan":
        if not tracing.enabled():
            return cls(INVALID_SPAN)
        provider = target.model.provider
        span = tracing.start(f"chat {target.request.model}", {
            "gen_ai.operation.name": "chat", "gen_ai.system": provider, "gen_ai.provider.name": provider,
            "gen_ai.request.model": target.request.model, "gen_ai.request.max_tokens": target.request.max_output_tokens,
            "server.address": urlsplit(target.request.base_url or "").hostname or provider,
            "parley.model": target.model.name, "parley.attempt": attempt,
        }, SpanKind.CLIENT)
        return cls(span, target.request.model, span.is_recording())  # a sampled-out call records nothing

    def saw(self, event: StreamEvent) -> None:
        if not self.recording or isinstance(event, TextDelta):
            return
        if isinstance(event, Usage):
            if event.prompt_tokens is not None:
                self.span.set_attribute("gen_ai.usage.input_tokens", event.prompt_tokens)
            if event.completion_tokens is not None:
                self.span.set_attribute("gen_ai.usage.output_tokens", event.completion_tokens)
        elif isinstance(event, Finish):
            self.span.set_attribute("gen_ai.response.finish_reasons", (event.reason,))
            self.span.set_attribute("gen_ai.response.model", event.model_version or self.requested)
        elif isinstance(event, StreamError):
            tracing.fail(self.span, str(event.code))

    def end(self) -> None:
        self.span.end()


def collect_once(target: Target) -> tuple[CollectedReply, Run]:
    """A whole reply of a call nobody streams (a title, a shadow), on an event loop of its own with
    an adapter of its own, through the same attempts (retried before its first token, kept from an
    open breaker; no failover), and the attempts it took, for the ledger."""
    provider = new_provider(target.model.provider)
    run = Run(target, provider_for=lambda _: provider)

    async def ask() -> CollectedReply:
        try:
            return await collect_events(run.events())
        finally:
            await provider.aclose()  # the loop ends with this call: so must its connections

    return asyncio.run(ask()), run


def _ms_since(moment: float) -> int:
    return int((time.monotonic() - moment) * 1000)
