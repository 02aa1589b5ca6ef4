"""The support console's audit record: appended rows chain by hash, `verify_audit` names the first
row edited or deleted behind the app's back, and the app itself can neither change nor remove one."""

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from support import audit
from support.models import AppendOnlyError, AuditEvent, AuditHead


def verify_audit(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("verify_audit", *args, stdout=out)
    except SystemExit as exit:
        return int(exit.code), out.getvalue()
    return 0, out.getvalue()


def sql(statement: str, params: list[object] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def three(actor: object) -> list[AuditEvent]:
    return [
        audit.record(actor, AuditEvent.Action.SEARCH, conversations=[3, 1, 3], query="refund “late” \x00 ünïcode"),
        audit.record(actor, "view", conversations=[7], detail={"z": [1, None, True], "a": {"nested": "x"}, "big": 2**62}),
        audit.record(actor, AuditEvent.Action.REVEAL, conversations=[7], reason="ticket 4411: the user asked"),
    ]


@pytest.mark.django_db
def test_rows_chain_and_the_record_verifies_intact(alice):
    first, second, third = three(alice)

    assert first.prev_hash == audit.GENESIS
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert [first.id, second.id, third.id] == [1, 2, 3]
    assert audit.verify() is None
    code, out = verify_audit()
    assert code == 0
    assert out.splitlines()[0] == "audit record intact: 3 rows"
    assert f"last row: 3:{third.hash}" in out


@pytest.mark.django_db
def test_what_is_hashed_is_what_the_database_gives_back(alice):
    written = three(alice)

    for event in written:
        stored = AuditEvent.objects.get(id=event.id)
        assert audit._content(stored) == audit._content(event)
        assert audit.digest(stored) == stored.hash == event.hash
    stored = AuditEvent.objects.get(id=written[0].id)
    assert stored.conversations == [1, 3]
    assert stored.query == "refund “late” \ufffd ünïcode"
    assert stored.actor_id == alice.pk and stored.actor_name == "alice"
    assert AuditEvent.objects.get(id=written[1].id).detail["big"] == 2**62


@pytest.mark.django_db
def test_detail_refuses_what_would_not_read_back_the_same(alice):
    with pytest.raises(TypeError):
        audit.record(alice, "export", detail={"ratio": 1e20})
    with pytest.raises(ValueError):
        audit.record(alice, "delete everything")
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_a_row_edited_in_the_database_is_named(alice):
    three(alice)
    sql("UPDATE support_auditevent SET query = %s WHERE id = 2", ["nothing to see"])

    code, out = verify_audit()

    assert code == 1
    assert out.strip() == "audit record broken at row 2: edited (its hash does not match its content)"
    assert audit.verify() == audit.Broken(2, audit.Problem.EDITED, "its hash does not match its content")


@pytest.mark.django_db
def test_a_row_renumbered_in_the_database_is_named(alice):
    three(alice)
    sql("UPDATE support_auditevent SET id = 30 WHERE id = 3")

    broken = audit.verify()

    assert broken is not None and broken.row_id == 30 and broken.problem == audit.Problem.EDITED


@pytest.mark.django_db
def test_a_row_deleted_from_the_middle_is_named_by_the_next(alice):
    three(alice)
    sql("DELETE FROM support_auditevent WHERE id = 2")

    code, out = verify_audit()

    assert code == 1
    assert out.startswith("audit record broken at row 3: missing before it (its prev_hash is not row 1's hash")


@pytest.mark.django_db
def test_the_walk_keeps_the_link_across_its_chunks(alice, monkeypatch):
    monkeypatch.setattr(audit, "CHUNK", 2)  # the walk reads a few rows at a time; make "a few" two
    for n in range(5):
        audit.record(alice, "list", query=f"page {n}")
    code, out = verify_audit()
    assert code == 0 and out.startswith("audit record intact: 5 rows\n")

    sql("DELETE FROM support_auditevent WHERE id = 3")  # the last row of the first chunk

    broken = audit.verify()
    assert broken is not None and (broken.row_id, broken.problem) == (4, audit.Problem.MISSING_BEFORE)


@pytest.mark.django_db
def test_a_deleted_first_row_is_named_by_the_next(alice):
    three(alice)
    sql("DELETE FROM support_auditevent WHERE id = 1")

    broken = audit.verify()

    assert broken is not None and (broken.row_id, broken.problem) == (2, audit.Problem.MISSING_BEFORE)


@pytest.mark.django_db
def test_a_deleted_last_row_is_named_and_so_is_the_gap_after_the_next_append(alice):
    three(alice)
    sql("DELETE FROM support_auditevent WHERE id = 3")

    code, out = verify_audit()
    assert code == 1
    assert out.strip() == "audit record broken at row 3: missing at the end (the record ends at row 2 but its last append was row 3)"

    audit.record(alice, "list")  # row 4 chains onto the head, i.e. onto the row that is gone
    broken = audit.verify()
    assert broken is not None and (broken.row_id, broken.problem) == (4, audit.Problem.MISSING_BEFORE)


@pytest.mark.django_db
def test_a_last_row_rewritten_with_a_fresh_hash_does_not_match_the_head(alice):
    three(alice)
    event = AuditEvent.objects.get(id=3)
    event.reason = "routine check"
    sql("UPDATE support_auditevent SET reason = %s, hash = %s WHERE id = 3", [event.reason, audit.digest(event)])

    broken = audit.verify()

    assert broken is not None and (broken.row_id, broken.problem) == (3, audit.Problem.EDITED)


@pytest.mark.django_db
def test_a_rewrite_of_row_and_head_is_caught_only_against_a_head_kept_elsewhere(alice):
    three(alice)
    code, out = verify_audit()
    kept = out.splitlines()[1].split()[2]  # "last row: 3:<hash> (...)"
    event = AuditEvent.objects.get(id=3)
    event.reason = "routine check"
    sql("UPDATE support_auditevent SET reason = %s, hash = %s WHERE id = 3", [event.reason, audit.digest(event)])
    sql("UPDATE support_audithead SET last_hash = %s", [audit.digest(event)])

    assert verify_audit()[0] == 0  # the chain alone cannot tell
    code, out = verify_audit("--head", kept)
    assert code == 1
    assert out.startswith("audit record broken at row 3: edited (its hash is not the one kept outside the database")


@pytest.mark.django_db
def test_a_row_inserted_behind_the_apps_back_is_named(alice):
    three(alice)
    forged = AuditEvent(id=4, at=AuditEvent.objects.get(id=3).at, actor_name="mallory", action="view",
                        conversations=[], query="", reason="", detail={}, prev_hash=AuditEvent.objects.get(id=3).hash)
    forged.hash = audit.digest(forged)
    forged.save()  # the model lets a complete row in; the head does not know it

    broken = audit.verify()

    assert broken is not None and (broken.row_id, broken.problem) == (4, audit.Problem.UNRECORDED)


@pytest.mark.django_db
def test_the_app_can_neither_change_nor_remove_a_row(alice):
    event = audit.record(alice, "view", conversations=[1])

    event.query = "changed"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(id=event.id).update(query="changed")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_update([event], ["query"])
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.create(actor_name="alice", action="view")  # not chained: only record() appends
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_create([AuditEvent(actor_name="alice", action="view")])

    assert AuditEvent.objects.get(id=event.id).query == ""
    assert audit.verify() is None


@pytest.mark.django_db
def test_deleting_the_user_leaves_the_record_whole(alice):
    three(alice)
    alice.delete()

    assert AuditEvent.objects.count() == 3
    assert AuditEvent.objects.get(id=1).actor_name == "alice"
    assert audit.verify() is None


@pytest.mark.django_db
def test_a_lost_head_stops_appends_instead_of_starting_a_second_chain(alice):
    three(alice)
    sql("DELETE FROM support_audithead")

    broken = audit.verify()
    assert broken is not None and broken.problem == audit.Problem.MISSING_AT_END
    with pytest.raises(RuntimeError, match="head is gone"):
        audit.record(alice, "view")
    assert AuditHead.objects.count() == 0


@pytest.mark.django_db
def test_admins_read_the_record_and_nobody_changes_it_there(alice, admin_client):
    event = audit.record(alice, "search", conversations=[5], query="needle in a haystack")

    listing = admin_client.get("/admin/support/auditevent/")
    assert listing.status_code == 200
    assert b"needle in a haystack" in listing.content and b"alice" in listing.content
    assert admin_client.get("/admin/support/auditevent/?q=needle").status_code == 200
    assert admin_client.get("/admin/support/auditevent/?action__exact=search").status_code == 200
    assert admin_client.get(f"/admin/support/auditevent/{event.id}/change/").status_code == 200  # view only
    assert admin_client.get("/admin/support/auditevent/add/").status_code == 403
    assert admin_client.post(f"/admin/support/auditevent/{event.id}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(f"/admin/support/auditevent/{event.id}/change/", {"query": "x"}).status_code == 403
    bulk = admin_client.post(
        "/admin/support/auditevent/", {"action": "delete_selected", "_selected_action": [event.id], "post": "yes"}
    )
    assert bulk.status_code in {200, 302}  # no such action: the admin says so and deletes nothing
    assert AuditEvent.objects.get(id=event.id).query == "needle in a haystack"
    assert audit.verify() is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_keep_one_chain(django_user_model):
    agents = [django_user_model.objects.create_user(f"agent{n}", password="agent-password-123") for n in range(4)]
    per_thread = 15
    start = threading.Barrier(len(agents))
    failures: list[BaseException] = []

    def append(agent: object) -> None:
        try:
            start.wait()
            for n in range(per_thread):
                audit.record(agent, "view", conversations=[n])
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=append, args=(agent,)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not failures
    total = len(agents) * per_thread
    assert verify_audit() == (0, f"audit record intact: {total} rows\nlast row: {total}:{AuditEvent.objects.last().hash}"
                              " (keep a copy elsewhere; check with --head)\n")
    assert {event.actor_name for event in AuditEvent.objects.all()} == {f"agent{n}" for n in range(4)}
