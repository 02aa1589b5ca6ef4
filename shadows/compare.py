"""Real and shadow replies side by side, for the admin's compare page: each pair's length,
tokens, latency, cost and status, a word-level diff of the two texts, and the sample's totals.

The diff is plain data (segments of text with what happened to them); the template escapes the
text, so model output is never read as HTML.
"""

import difflib
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import QuerySet
from django.db.models.functions import Length

from shadows.models import ShadowConfig, ShadowRun

# Texts are compared up to this many characters each: SequenceMatcher's time grows with the square
# of the words in the worst case, and a page shows many pairs.
DIFF_CHARS = 20_000
SAMPLE_RUNS = 1_000  # the totals are over a config's newest ended runs, at most this many

_WORDS = re.compile(r"\s+|\w+|[^\w\s]")


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a pair: the real reply, or its shadow."""

    model: str
    status: str
    chars: int
    prompt_tokens: int | None
    completion_tokens: int | None
    estimated: bool
    ttft_ms: int | None
    duration_ms: int | None
    cost_usd: Decimal | None
    error_code: str = ""


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of the diff: `equal`, `delete` (only in the real reply) or `insert` (only in the shadow)."""

    op: str
    text: str


@dataclass(frozen=True, slots=True)
class Pair:
    run: ShadowRun
    real: Side
    shadow: Side
    diff: list[Segment]
    cut: bool  # a text was longer than DIFF_CHARS: the diff covers its beginning


def pairs(runs: Iterable[ShadowRun]) -> list[Pair]:
    """Each run (its message loaded with it) as a pair of sides with their diff."""
    out = []
    for run in runs:
        reply = run.message
        real = Side(
            reply.model, reply.status, len(reply.content), reply.prompt_tokens, reply.completion_tokens,
            reply.tokens_estimated, reply.ttft_ms, reply.duration_ms, reply.cost_usd, reply.error_code,
        )
        shadow = Side(
            run.model, run.status, len(run.text), run.prompt_tokens, run.completion_tokens, run.estimated,
            run.ttft_ms, run.duration_ms, run.cost_usd, run.error_code,
        )
        out.append(Pair(run, real, shadow, diff(reply.content, run.text), max(len(reply.content), len(run.text)) > DIFF_CHARS))
    return out


def diff(real: str, shadow: str) -> list[Segment]:
    """The two texts word by word (whitespace and punctuation as words of their own), runs of the same op merged."""
    a, b = _WORDS.findall(real[:DIFF_CHARS]), _WORDS.findall(shadow[:DIFF_CHARS])
    segments: list[Segment] = []
    for tag, a_start, a_end, b_start, b_end in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("equal", "delete", "replace"):
            _append(segments, "equal" if tag == "equal" else "delete", "".join(a[a_start:a_end]))
        if tag in ("insert", "replace"):
            _append(segments, "insert", "".join(b[b_start:b_end]))
    return segments


def _append(segments: list[Segment], op: str, text: str) -> None:
    if not text:
        return
    if segments and segments[-1].op == op:
        segments[-1] = Segment(op, segments[-1].text + text)
    else:
        segments.append(Segment(op, text))


@dataclass(frozen=True, slots=True)
class Totals:
    """One side's numbers over the sample."""

    runs: int
    mean_chars: float | None
    mean_completion_tokens: float | None
    p50_ttft_ms: float | None
    p50_duration_ms: float | None
    total_cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class Summary:
    ended: int  # runs that ended (complete or failed), the newest SAMPLE_RUNS at most
    complete: int  # of them, those whose shadow completed: the totals are over these
    failed: int
    running: int
    real: Totals
    shadow: Totals


def summary(config: ShadowConfig) -> Summary:
    """Totals and averages over the config's newest ended runs: both sides over the runs whose shadow
    completed (a failed shadow says nothing of length or latency), failures counted apart."""
    runs: QuerySet[ShadowRun] = config.runs.all()
    running = runs.filter(status=ShadowRun.Status.RUNNING).count()
    rows = list(
        runs.exclude(status=ShadowRun.Status.RUNNING).order_by("-id").annotate(
            shadow_chars=Length("text"), real_chars=Length("message__content")
        ).values_list(
            "status", "real_chars", "message__completion_tokens", "message__ttft_ms", "message__duration_ms",
            "message__cost_usd", "shadow_chars", "completion_tokens", "ttft_ms", "duration_ms", "cost_usd",
        )[:SAMPLE_RUNS]
    )
    complete = [row for row in rows if row[0] == ShadowRun.Status.COMPLETE]
    return Summary(
        ended=len(rows), complete=len(complete), failed=len(rows) - len(complete), running=running,
        real=_totals([row[1:6] for row in complete]), shadow=_totals([row[6:11] for row in complete]),
    )


def _totals(rows: Sequence[tuple]) -> Totals:
    chars, tokens, ttft, duration, cost = (list(column) for column in zip(*rows, strict=True)) if rows else ([], [], [], [], [])
    return Totals(
        runs=len(rows), mean_chars=_mean(chars), mean_completion_tokens=_mean(tokens), p50_ttft_ms=_median(ttft),
        p50_duration_ms=_median(duration), total_cost_usd=sum((Decimal(value) for value in cost if value is not None), Decimal(0)),
    )


def _mean(values: list[int | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.fmean(known) if known else None


def _median(values: list[int | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None
