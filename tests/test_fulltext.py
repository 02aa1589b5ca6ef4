"""Full-text search for the support console (support/fulltext.py) on the database under test:
words, phrases and prefixes; the query's syntax inert; newest first by keyset; the caller's
scope; masking; the index in step with every write path, the streaming core's included; and agent
runs' text (runs write no messages).

Run it on both: `python -m parley.testrunner tests/test_fulltext.py` and again with
DATABASE_URL=postgres://... ."""

import asyncio
import importlib
import json
import time
from datetime import timedelta

import httpx
import pytest
import websockets
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import ApiToken
from agents.models import AgentRun, AgentStep
from chat.actions import create_conversation
from chat.models import Message
from support import fulltext, fulltext_index
from support.fulltext import search, search_runs

pytestmark = pytest.mark.django_db


def say(conversation, text: str, role: str = "user") -> Message:
    return Message.objects.create(conversation=conversation, role=role, content=text)


def found(query: str, **kwargs) -> list[int]:
    return [hit.message_id for hit in search(query, **kwargs).hits]


@pytest.fixture
def talk(alice):
    return create_conversation(alice)


def test_words_must_all_occur_in_any_order_and_case(talk):
    both = say(talk, "The Refund was approved after the policy review.")
    say(talk, "A refund is pending.")
    assert found("policy REFUND") == [both.pk]
    assert found("refund")[::-1] == [both.pk, both.pk + 1]
    assert found("refund nothingmatches") == []


def test_a_prefix_finds_the_whole_word_and_is_marked_whole(talk):
    message = say(talk, "Please refund my order <b>now</b>.")
    page = search("refu")
    assert [hit.message_id for hit in page.hits] == [message.pk]
    assert str(page.hits[0].snippet) == "Please <mark>refund</mark> my order &lt;b&gt;now&lt;/b&gt;."
    assert page.hits[0].conversation_id == talk.pk


def test_a_quoted_phrase_needs_its_words_in_a_row(talk):
    together = say(talk, "the refund policy changed")
    say(talk, "the policy on a refund changed")
    assert found('"refund policy"') == [together.pk]
    assert found('"refund pol"') == [together.pk]  # its last word a prefix too
    assert str(search('"refund policy"').hits[0].snippet) == "the <mark>refund policy</mark> changed"


def test_punctuation_inside_a_word_searches_its_parts_as_a_phrase(talk):
    message = say(talk, "Send it by e-mail or see example.com/refund-policy")
    assert found("e-mail") == [message.pk]
    assert found("example.com/refund") == [message.pk]
    assert found("refund") == [message.pk]  # a URL's words are words on both databases


def test_diacritics_and_other_scripts(talk):
    cafe = say(talk, "Un café au lait, s'il vous plaît")
    tokyo = say(talk, "東京 is big; हिन्दी text too")
    assert found("café") == [cafe.pk]
    assert found("東京") == [tokyo.pk]
    assert found("हिन्दी") == [tokyo.pk]


SYNTAX = [
    '"', '""', '"unclosed', "*", "refund*", "ref:*", "a:b", "&", "|", "!", "!refund", "(", ")", "(refund",
    "refund OR policy", "NEAR(refund policy)", "refund NOT policy", "refund AND", "^refund", "-refund", "+refund",
    "'", "''", "' OR 1=1 --", "'; DROP TABLE chat_message; --", "\\", "\\'", "%", "_", "refund <-> policy",
    "content:refund", "{content}: refund", "refund:A", "x" * 500, "\x00", "🙂", "  ", "", "...", "--",
    "²", "½ ⅷ", "x²y", "\u0301", "a\u0301", "refund \u200b policy", "ﬁ", "İ", "ß",
]


@pytest.mark.parametrize("query", SYNTAX)
def test_the_query_syntax_of_the_index_is_never_reached(talk, query):
    say(talk, "refund policy")
    page = search(query)  # never an error
    for hit in page.hits:
        assert "refund" in str(hit.snippet) or "policy" in str(hit.snippet)
    assert Message.objects.count() == 1


def test_operators_are_searched_as_text_not_obeyed(talk):
    say(talk, "refund policy")
    say(talk, "policy only")
    assert found("refund OR policy") == []  # "or" is a word here, and no message holds it
    either = say(talk, "refund or policy")
    assert found("refund OR policy") == [either.pk]
    assert found("NOT refund") == []
    assert found("refund NEAR policy") == []


def test_empty_or_punctuation_only_queries_find_nothing(talk):
    say(talk, "anything at all")
    for query in ["", "   ", "!!! ??? ---", '"" *', "( )"]:
        assert search(query).hits == [] and search(query).next_before is None


def test_newest_first_by_keyset_pages(talk):
    ids = [say(talk, f"ticket number {n}").pk for n in range(7)]
    say(talk, "unrelated")
    first = search("ticket", limit=3)
    assert [hit.message_id for hit in first.hits] == ids[::-1][:3]
    assert first.next_before == ids[4]
    second = search("ticket", limit=3, before=first.next_before)
    assert [hit.message_id for hit in second.hits] == ids[::-1][3:6]
    third = search("ticket", limit=3, before=second.next_before)
    assert [hit.message_id for hit in third.hits] == ids[:1]
    assert third.next_before is None
    exact = search("ticket", limit=7)
    assert len(exact.hits) == 7 and exact.next_before is None


def test_pages_are_the_same_whether_the_query_is_common_or_rare_among_the_newest(talk):
    """PostgreSQL reads a query common among the newest messages along the key, a rare one
    through the index (support/fulltext.py): both give the same pages."""
    common = [say(talk, f"frequent word {n}").pk for n in range(40)]
    rare = say(talk, "frequent but rarity").pk
    common += [say(talk, f"frequent word {n}").pk for n in range(40, 45)]
    assert found("rarity") == [rare]
    pages, before = [], None
    while True:
        page = search("frequent word", limit=15, before=before)
        pages.append([hit.message_id for hit in page.hits])
        if page.next_before is None:
            break
        before = page.next_before
    assert [pk for page in pages for pk in page] == common[::-1]
    assert found("frequent", limit=100) == sorted(common + [rare], reverse=True)


def test_a_search_inside_a_transaction_leaves_its_planner_settings_as_they_were(talk):
    say(talk, "planner settings")
    with transaction.atomic(), connection.cursor() as cursor:
        assert found("planner") == [Message.objects.get().pk]
        if connection.vendor == "postgresql":
            cursor.execute("SELECT current_setting('enable_seqscan'), current_setting('enable_bitmapscan'), current_setting('jit')")
            assert cursor.fetchone()[:2] == ("on", "on")


def test_the_scope_restricts_in_the_same_query(alice, bob, talk):
    mine = say(talk, "invoice question")
    theirs = say(create_conversation(bob), "invoice question")
    old = say(talk, "invoice question, older")
    Message.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(days=30))
    assert set(found("invoice")) == {mine.pk, theirs.pk, old.pk}
    assert found("invoice", scope=Message.objects.filter(conversation__owner=bob)) == [theirs.pk]
    recent = Message.objects.filter(created__gte=timezone.now() - timedelta(days=1), conversation__owner=alice)
    with CaptureQueriesContext(connection) as queries:
        assert found("invoice", scope=recent) == [mine.pk]
    scoped = [query["sql"] for query in queries.captured_queries if "owner_id" in query["sql"]]
    assert len(scoped) == 1 and ("MATCH" in scoped[0] or "search_vector @@" in scoped[0])  # not ids fetched first
    with pytest.raises(TypeError):
        search("invoice", scope=alice.conversations.all())


def test_a_masked_address_is_not_found_by_itself_or_its_parts(talk):
    only_address = say(talk, "Write to alice.smith@example.com about it")
    also_named = say(talk, "Alice said: write to alice.smith@example.com")
    page = search("alice.smith@example.com")
    assert page.dropped == ["email"] and page.hits == []
    assert found("smith") == []
    assert found("example") == []
    assert found("alice") == [also_named.pk]  # her name outside the address
    snippet = str(search("alice").hits[0].snippet)
    assert "example.com" not in snippet and "[email]" in snippet and "<mark>Alice</mark>" in snippet
    assert found("write") == [also_named.pk, only_address.pk]
    assert all("example.com" not in str(hit.snippet) for hit in search("write").hits)


def test_the_masked_check_scans_past_hidden_matches_and_says_where_to_go_on(talk, monkeypatch):
    visible = say(talk, "contact bob directly")
    hidden = [say(talk, f"mail bob{n}@example.com").pk for n in range(5)]
    assert found("bob") == [visible.pk]
    monkeypatch.setattr(fulltext, "SCAN_MAX", 3)
    monkeypatch.setattr(fulltext, "BATCH_MIN", 2)
    capped = search("bob")
    assert capped.hits == [] and capped.next_before == hidden[2]
    assert found("bob", before=capped.next_before) == [visible.pk]


# --- every write path ------------------------------------------------------------------------------


def test_edits_by_update_and_save_and_deletions_are_reflected(talk):
    message = say(talk, "first draft about walruses")
    Message.objects.filter(pk=message.pk).update(content="second draft about narwhals")
    assert found("walruses") == []
    assert found("narwhals") == [message.pk]
    message.refresh_from_db()
    message.content = "third draft about manatees"
    message.save()
    assert found("narwhals") == [] and found("manatees") == [message.pk]
    message.status = "stopped"
    message.save()  # every column rewritten, the text unchanged
    assert found("manatees") == [message.pk]
    message.delete()
    assert found("manatees") == []


def test_bulk_inserts_and_cascaded_deletes_are_reflected(talk):
    Message.objects.bulk_create([Message(conversation=talk, role="user", content=f"bulk lemur {n}") for n in range(3)])
    assert len(found("lemur")) == 3
    talk.delete()
    assert found("lemur") == []


def test_the_streaming_cores_single_statement_writes_are_reflected(talk):
    from parley import statements

    reply = say(talk, "", role="assistant")
    statements.update(Message, reply.pk, {"content": "checkpoint about capybaras", "status": "streaming"})
    assert found("capybaras") == [reply.pk]
    statements.update(Message, reply.pk, {"content": "final answer about axolotls", "status": "complete"})
    assert found("capybaras") == [] and found("axolotls") == [reply.pk]


def test_the_index_is_kept_by_the_database():
    """SQLite drops a table's triggers when a migration rebuilds it: after every migration, the
    triggers must be there (on PostgreSQL, the generated column and its index)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'chat_message'")
            assert {row[0] for row in cursor.fetchall()} >= {
                "chat_message_fts_insert", "chat_message_fts_update", "chat_message_fts_delete"
            }
        else:
            cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'chat_message'")
            assert "chat_message_search" in {row[0] for row in cursor.fetchall()}


def test_sqlite_triggers_a_table_rebuild_dropped_come_back_after_migrate_with_what_they_missed(talk):
    from django.core.management.sql import emit_post_migrate_signal

    if connection.vendor != "sqlite":
        # PostgreSQL's generated column goes with the table, whatever a migration rebuilds: after
        # a migrate there is nothing to put back, and what is written is found.
        emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
        assert fulltext_index.repair() == []
        written = say(talk, "written after a migrate")
        assert found("after a migrate") == [written.pk]
        return

    migration = importlib.import_module("chat.migrations.0016_message_fulltext")
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'chat_message'")
        assert dict(cursor.fetchall()) == fulltext_index.TRIGGERS  # as the migration made them
        assert set(fulltext_index.TRIGGERS.values()) <= set(migration.SQLITE_FORWARD)
        cursor.execute("DROP TRIGGER chat_message_fts_insert")  # as rebuilding chat_message does
    missed = say(talk, "written while nothing indexed it")
    assert found("nothing indexed") == []
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    assert found("nothing indexed") == [missed.pk]
    assert found("indexed", scope=Message.objects.filter(pk=say(talk, "indexed again").pk)) == [missed.pk + 1]
    assert fulltext_index.repair() == []  # nothing missing: nothing done


# --- text the streaming core and agent runs wrote, through the real processes ------------------------


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_streamed_reply_is_found_once_finished(live_app, alice):
    token = ApiToken.issue(alice, "fulltext")[1]

    async def scenario() -> tuple[int, str]:
        url = live_app.url.replace("http", "ws") + "/ws/chat/"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send(json.dumps({"type": "send", "conversation": None, "content": "count for me /words 40"}))
            created = json.loads(await ws.recv())
            reply_id = created["assistant_message"]["id"]
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if event.get("message") == reply_id and event["type"] in {"done", "error"}:
                    return reply_id, event["type"]

    reply_id, final = asyncio.run(scenario())
    assert final == "done"
    assert Message.objects.get(pk=reply_id).content.split()[-1] == "word40"
    page = search('"word37 word38"')
    assert [hit.message_id for hit in page.hits] == [reply_id]
    assert "<mark>word37 word38</mark>" in str(page.hits[0].snippet)
    assert found("word40") == [reply_id]
    assert found("count") == [reply_id - 1]  # the user's message, stored by the same send


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_sent_message_and_its_reply_over_http_are_found(live_app, alice):
    token = ApiToken.issue(alice, "fulltext")[1]
    headers = {"Authorization": f"Bearer {token}"}
    conversation = httpx.post(f"{live_app.url}/api/conversations/", json={}, headers=headers).json()["id"]
    sent = httpx.post(
        f"{live_app.url}/api/conversations/{conversation}/messages", json={"content": "quokka census /words 12"}, headers=headers
    ).json()
    reply_id = sent["assistant_message"]["id"]
    with httpx.stream("GET", f"{live_app.url}/api/messages/{reply_id}/events", headers=headers, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("event: done") or line.startswith("event: error"):
                break
    assert found("quokka") == [sent["user_message"]["id"]]
    assert found("word12", scope=Message.objects.filter(conversation_id=conversation)) == [reply_id]


# --- agent runs: they write no messages; their goal, model steps and result are searched -----------


def run_of(conversation, goal: str, steps: list[str], result: str = "") -> AgentRun:
    run = AgentRun.objects.create(owner=conversation.owner, conversation=conversation, goal=goal, model="demo", result=result)
    for index, text in enumerate(steps, 1):
        AgentStep.objects.create(run=run, index=index, kind="model", title="Thinking", text=text)
    AgentStep.objects.create(run=run, index=len(steps) + 1, kind="tool", title="Searching", tool="x", text="toolsecret")
    return run


def found_runs(query: str, **kwargs) -> list[int]:
    return [hit.run_id for hit in search_runs(query, **kwargs).hits]


def test_runs_are_found_by_goal_model_steps_and_result_masked(alice, bob, talk):
    first = run_of(talk, "Summarize the walrus report", ["Looking at the Walrus numbers"], "Walruses are fine.")
    second = run_of(create_conversation(bob), "Mail pat.jones@example.com the summary", ["Thinking about tusks"])
    assert found_runs("walrus numbers") == [first.pk]
    assert found_runs("tusk") == [second.pk]
    assert found_runs("summ") == [second.pk, first.pk]
    assert found_runs("toolsecret") == []  # a tool step's text is not the run's own words
    assert found_runs("pat") == [] and found_runs("pat.jones@example.com") == []
    assert found_runs("summ", scope=AgentRun.objects.filter(owner=alice)) == [first.pk]
    page = search_runs('"walrus numbers"')
    assert page.hits[0].conversation_id == talk.pk and "<mark>Walrus numbers</mark>" in str(page.hits[0].snippet)
    assert found_runs("summ", limit=1, before=second.pk) == [first.pk]
    for query in SYNTAX:
        search_runs(query)  # never an error


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_real_agent_runs_text_is_found(live_app, alice):
    token = ApiToken.issue(alice, "fulltext")[1]
    headers = {"Authorization": f"Bearer {token}"}
    conversation = httpx.post(f"{live_app.url}/api/conversations/", json={}, headers=headers).json()["id"]
    goal = "Find what we said about zeppelins and compute 12 * 7"
    started = httpx.post(f"{live_app.url}/api/conversations/{conversation}/runs", json={"goal": goal}, headers=headers)
    assert started.status_code == 201, started.text
    run_id = started.json()["run"]["id"]
    deadline = time.monotonic() + 30
    while AgentRun.objects.get(pk=run_id).is_active:
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.2)
    run = AgentRun.objects.get(pk=run_id)
    assert run.status == "succeeded" and run.result.startswith("Done in 3 steps")
    assert found_runs("zeppelins") == [run_id]
    assert found_runs('"done in 3 steps"') == [run_id]  # the final answer, written by the worker
    assert found_runs("84") == [run_id]  # the calculation it quoted
    assert search("zeppelins").hits == []  # no message holds it
