"""Full-text search over every user's messages, for the support console: one interface over
PostgreSQL full-text search and SQLite FTS5 (the index: chat/migrations/0016_message_fulltext.py).

A query is words, all required, and "quoted phrases"; the last word of each is a prefix ("refu"
finds "refund"). Nothing else in it has a meaning: operators, quotes and brackets are searched as
text, and nothing the user typed reaches the index's own query syntax except words (letters and
digits) that we quote ourselves.

Search respects masking (support/masking.py): personal data in the query is dropped first, and
each message the index finds is checked again against its masked text, so that a masked e-mail
address is never found by searching for it or for a piece of it. Snippets come from the masked
text, escaped, with the matches marked."""

import contextlib
import functools
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils.safestring import SafeString

from agents.models import AgentRun, AgentStep
from chat.models import Message
from chat.search import SNIPPET_CHARS, excerpt_at, marked
from support.masking import mask, masked_query

QUERY_MAX = 200  # characters of a query that are searched for
TERMS_MAX = 10  # words and phrases; more make a query slow and find nothing more useful
SCAN_MAX = 2000  # candidates checked against their masked text per request
BATCH_MIN = 100


@dataclass(frozen=True, slots=True)
class Term:
    """A word or a phrase: its words in order, the last one a prefix."""

    words: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Hit:
    message_id: int
    conversation_id: int
    snippet: SafeString  # masked, escaped, the matches in <mark>


@dataclass(frozen=True, slots=True)
class RunHit:
    run_id: int
    conversation_id: int
    snippet: SafeString  # masked, escaped, the matches in <mark>


@dataclass(frozen=True)  # no slots: with them, SearchPage[Hit](...) fails on Python 3.12
class SearchPage[H: (Hit, RunHit)]:
    """Hits newest first. `next_before`: pass it as `before` for the next page; None when the search
    has reached the oldest message. A page can be short (even empty) and still have a next one when
    the request checked its quota of candidates. `dropped`: the kinds of personal data taken out of
    the query (e.g. "email"), for the console to say so."""

    hits: list[H] = field(default_factory=list)
    next_before: int | None = None
    dropped: list[str] = field(default_factory=list)


Rows = list[tuple[int, int, str]]  # candidates newest first: (id, conversation id, text)


# --- words ---------------------------------------------------------------------------------------


@functools.cache
def _word() -> re.Pattern[str]:
    """Letters and digits, with the combining marks inside words (Python's \\w leaves them out, and
    PostgreSQL keeps e.g. Devanagari words whole)."""
    ranges = []
    for code in [*range(0x20000), *range(0xE0100, 0xE01F0)]:
        if unicodedata.category(chr(code)).startswith("M"):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    marks = "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b != a else "") for a, b in ranges)
    return re.compile(f"(?:[^\\W_]|[{marks}])+")


@functools.lru_cache(maxsize=65536)
def _fold(word: str) -> str:
    """How words compare: without case or diacritics (as SQLite's index; PostgreSQL's keeps
    diacritics, so it finds fewer, never more)."""
    if word.isascii():
        return word.lower()
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.category(c).startswith("M")).casefold()


Words = list[tuple[str, int, int]]  # each word folded, with its span in the text


def words_of(text: str) -> Words:
    return [(_fold(m.group()), m.start(), m.end()) for m in _word().finditer(text)]


_PIECE = re.compile(r'"([^"]*)"?|([^\s"]+)')  # a phrase (its closing quote optional) or a word


def parse(query: str) -> list[Term]:
    """The words and phrases of `query` (punctuation inside a word splits it into a phrase:
    "e-mail" is the phrase "e mail", as the index saw it)."""
    query = unicodedata.normalize("NFC", query)[:QUERY_MAX]
    terms = []
    for match in _PIECE.finditer(query):
        words = tuple(m.group() for m in _word().finditer(match.group(1) or match.group(2) or ""))
        if words and Term(words) not in terms:
            terms.append(Term(words))
    return terms[:TERMS_MAX]


def occurrences(words: Words, term: Term) -> list[tuple[int, int]]:
    """Where `term` occurs among `words`: its words in a row, the last one as a prefix."""
    *whole, last = [_fold(word) for word in term.words]
    size = len(whole) + 1
    found = []
    for i in range(len(words) - size + 1):
        if words[i + size - 1][0].startswith(last) and all(words[i + k][0] == w for k, w in enumerate(whole)):
            found.append((words[i][1], words[i + size - 1][2]))
    return found


def matches(text: str, terms: list[Term]) -> list[tuple[int, int]] | None:
    """The spans of every term in `text`, in order, overlaps merged; None unless every term occurs."""
    if text.isascii():  # a quick no first: most candidates a search rejects matched inside masked data
        lowered = text.lower()
        if any(word.isascii() and word.lower() not in lowered for term in terms for word in term.words):
            return None
    words = words_of(text)
    found = []
    for term in terms:
        spans = occurrences(words, term)
        if not spans:
            return None
        found += spans
    return _merged(found)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


# --- the index's query languages, built from words only ------------------------------------------


def tsquery(terms: list[Term]) -> str:
    """For PostgreSQL's to_tsquery('simple', ...): every word quoted, phrases with <->, prefixes :*."""

    def quoted(word: str) -> str:
        return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"

    return " & ".join(" <-> ".join(quoted(w) for w in term.words) + ":*" for term in terms)


def fts5_match(terms: list[Term]) -> str:
    """For SQLite FTS5's MATCH: each term one quoted string, the last word a prefix (`"refund pol"*`);
    inside quotes FTS5 reads no operators (NEAR, OR, NOT, ^, :, ...)."""
    return " ".join('"' + " ".join(term.words).replace('"', '""') + '"*' for term in terms)


# --- the search ----------------------------------------------------------------------------------


def _scope_sql(scope: QuerySet[Message] | None, correlated: bool = False) -> tuple[str, list[object]]:
    """The caller's filters as a subquery on `m`, the candidate: one query with the search,
    whatever the filters are. `correlated`: probed per candidate (SQLite would otherwise build the
    whole scope first, e.g. scan every message for a date); PostgreSQL plans `IN` as a semi-join
    and chooses for itself."""
    if scope is None:
        return "", []
    if scope.model is not Message:
        raise TypeError("scope must be a queryset of chat.Message")
    scope = scope.order_by()
    if correlated:
        sql, params = scope.filter(pk=RawSQL("m.id", ())).values("pk").query.sql_with_params()
        return f" AND EXISTS ({sql})", list(params)
    sql, params = scope.values("pk").query.sql_with_params()
    return f" AND m.id IN ({sql})", list(params)


def _candidates(terms: list[Term], scope: QuerySet[Message] | None, before: int | None, count: int) -> Rows:
    """Up to `count` messages the index matches, newest first, below `before`, within `scope`."""
    if connection.vendor == "postgresql":
        return _postgresql_candidates(terms, scope, before, count)
    if connection.vendor == "sqlite":
        return _sqlite_candidates(terms, scope, before, count)
    raise NotImplementedError(f"no full-text search on {connection.vendor}")


def _sqlite_candidates(terms: list[Term], scope: QuerySet[Message] | None, before: int | None, count: int) -> Rows:
    # Ordered by the FTS table's rowid, which FTS5 walks in order: no sort of every match.
    scope_sql, scope_params = _scope_sql(scope, correlated=True)
    below, below_params = (" AND f.rowid < %s", [before]) if before is not None else ("", [])
    sql = (
        "SELECT m.id, m.conversation_id, m.content FROM chat_message_fts f JOIN chat_message m ON m.id = f.rowid"
        " WHERE chat_message_fts MATCH %s" + below + scope_sql + " ORDER BY f.rowid DESC LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [fts5_match(terms), *below_params, *scope_params, count])
        return cursor.fetchall()


RECENT_ROWS = 5000  # PostgreSQL: how many of the newest messages tell a common query from a rare one
COMMON_MATCHES = 10  # ... and how many of them must match for it to be common (0.2%: where the two plans cost the same)


def _postgresql_candidates(terms: list[Term], scope: QuerySet[Message] | None, before: int | None, count: int) -> Rows:
    """Newest first, the plan chosen by how often the query matches among the newest messages.

    The planner cannot tell: its estimates for prefixes and phrases are guesses, and with ORDER BY
    id and a LIMIT it walks the primary key backwards, testing every row, which is fast for a
    common word and reads the whole table for a rare one (1.2 s on 1,000,000 messages); a GIN
    bitmap scan is the reverse (0.1 ms for a rare word, and every matching row read and sorted
    for a common one). So count the matches among the newest RECENT_ROWS first (a few ms), then
    walk the key for a common query and take the index for a rare one."""
    query = tsquery(terms)
    scope_sql, scope_params = _scope_sql(scope)
    below, below_params = (" AND m.id < %s", [before]) if before is not None else ("", [])
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT m.search_vector FROM chat_message m WHERE true" + below +
            " ORDER BY m.id DESC LIMIT %s) recent WHERE recent.search_vector @@ to_tsquery('simple', %s)",
            [*below_params, RECENT_ROWS, query],
        )
        common = cursor.fetchone()[0] >= COMMON_MATCHES
        order = "m.id DESC" if common else "m.id + 0 DESC"  # id + 0: no walk along the key
        # Its estimate for a phrase can be so low that it would read the whole table in parallel
        # and sort it (0.3 s), compiling the plan first (JIT): never a sequential scan.
        plan = {"enable_seqscan": "off", "jit": "off"} | ({"enable_bitmapscan": "off"} if common else {})
        with _planner(cursor, plan):
            cursor.execute(
                "SELECT m.id, m.conversation_id, m.content FROM chat_message m"
                " WHERE m.search_vector @@ to_tsquery('simple', %s)" + below + scope_sql + f" ORDER BY {order} LIMIT %s",
                [query, *below_params, *scope_params, count],
            )
            return cursor.fetchall()


@contextlib.contextmanager
def _planner(cursor: Any, settings: dict[str, str]) -> Iterator[None]:
    """PostgreSQL's planner `settings` for the statements inside, then as they were: set for the
    transaction only, and put back for the rest of it when the caller's transaction goes on."""
    names = list(settings)
    cursor.execute("SELECT " + ", ".join(["current_setting(%s)"] * len(names)), names)
    before = dict(zip(names, cursor.fetchone(), strict=True))
    cursor.execute("SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(names)), [x for n in names for x in (n, settings[n])])
    try:
        yield
    finally:
        cursor.execute("SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(names)), [x for n in names for x in (n, before[n])])


def snippet(masked: str, terms: list[Term], found: list[tuple[int, int]]) -> SafeString:
    """About SNIPPET_CHARS of the masked text around the first match, escaped, matches marked."""
    piece = excerpt_at(masked, found[0][0] if found else 0, SNIPPET_CHARS)
    words = words_of(piece)
    return marked(piece, _merged([span for term in terms for span in occurrences(words, term)]))


def search(query: str, *, scope: QuerySet[Message] | None = None, before: int | None = None, limit: int = 50) -> SearchPage[Hit]:
    """Messages whose masked text holds every word and phrase of `query`, newest first, at most
    `limit`, below message id `before`; within `scope` (a Message queryset the caller filtered)
    when given. An empty query, or one of punctuation only, finds nothing."""
    kept, dropped = masked_query(query)
    terms = parse(kept)
    if not terms or limit < 1:
        return SearchPage(dropped=dropped)
    return _page(terms, lambda below, count: _candidates(terms, scope, below, count), Hit, before, limit, dropped)


def search_runs(
    query: str, *, scope: QuerySet[AgentRun] | None = None, before: int | None = None, limit: int = 50
) -> SearchPage[RunHit]:
    """Agent runs (their goal, their model steps' text, their result) that hold every word and
    phrase of `query` once masked, newest first by run id, as `search` does for messages.

    Runs write no messages, and they are few beside messages: they are searched by their text
    without an index (a substring filter on each term's longest word, then the same word-by-word
    check on the masked text)."""
    kept, dropped = masked_query(query)
    terms = parse(kept)
    if not terms or limit < 1:
        return SearchPage(dropped=dropped)
    return _page(terms, lambda below, count: _run_candidates(terms, scope, below, count), RunHit, before, limit, dropped)


def _run_candidates(terms: list[Term], scope: QuerySet[AgentRun] | None, before: int | None, count: int) -> Rows:
    if scope is not None and scope.model is not AgentRun:
        raise TypeError("scope must be a queryset of agents.AgentRun")
    runs = AgentRun.objects.all() if scope is None else AgentRun.objects.filter(pk__in=scope.order_by().values("pk"))
    model_steps = AgentStep.objects.filter(run=OuterRef("pk"), kind=AgentStep.Kind.MODEL)
    for term in terms:
        word = max(term.words, key=len)
        runs = runs.filter(Q(goal__icontains=word) | Q(result__icontains=word) | Exists(model_steps.filter(text__icontains=word)))
    if before is not None:
        runs = runs.filter(pk__lt=before)
    found = list(runs.order_by("-pk").values_list("pk", "conversation_id", "goal", "result")[:count])
    steps = defaultdict(list)
    texts = AgentStep.objects.filter(run__in=[row[0] for row in found], kind=AgentStep.Kind.MODEL).exclude(text="")
    for run_id, text in texts.order_by("run_id", "index").values_list("run_id", "text"):
        steps[run_id].append(text)
    return [(pk, conversation_id, "\n\n".join([goal, *steps[pk], result])) for pk, conversation_id, goal, result in found]


def _page[H: (Hit, RunHit)](
    terms: list[Term], fetch: Callable[[int | None, int], Rows], make: Callable[[int, int, SafeString], H],
    before: int | None, limit: int, dropped: list[str],
) -> SearchPage[H]:
    """Candidates from `fetch` in batches, each checked against its masked text, until `limit` hits,
    the oldest candidate, or SCAN_MAX candidates."""
    hits: list[H] = []
    scanned, cursor, count = 0, before, max(BATCH_MIN, 2 * limit)
    while scanned < SCAN_MAX:
        count = min(count, SCAN_MAX - scanned)
        rows = fetch(cursor, count)
        scanned += len(rows)
        for index, (pk, conversation_id, text) in enumerate(rows):
            cursor = pk
            masked = unicodedata.normalize("NFC", mask(text))
            found = matches(masked, terms)
            if found is None:
                continue  # it matched only inside masked personal data
            hits.append(make(pk, conversation_id, snippet(masked, terms, found)))
            if len(hits) == limit:
                more = index < len(rows) - 1 or len(rows) == count
                return SearchPage(hits, pk if more else None, dropped)
        if len(rows) < count:
            return SearchPage(hits, None, dropped)  # the oldest match was reached
        count *= 2  # masking hid most of them: larger steps
    return SearchPage(hits, cursor, dropped)
