"""The hot path's precompiled statements read and write exactly what the ORM would."""

from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import ApiToken
from chat.models import ChatModel, Conversation, Message
from parley import statements

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(alice):
    model = ChatModel.objects.create(
        name="priced", label="Priced", provider="demo", input_price_per_million=Decimal("1.2500"), enabled=True
    )
    return Conversation.objects.create(owner=alice, model=model, title="Hello", title_is_auto=False, system_prompt="Be brief.")


def test_a_conversation_loads_with_its_model_as_the_orm_would(alice, conversation):
    loaded = statements.select_one(Conversation, {"id": conversation.pk, "owner": alice.pk}, related="model", lock=True)
    expected = Conversation.objects.select_related("model").get(pk=conversation.pk)
    assert loaded is not None
    for field in Conversation._meta.concrete_fields:
        assert getattr(loaded, field.attname) == getattr(expected, field.attname), field.name
    for field in ChatModel._meta.concrete_fields:
        assert getattr(loaded.model, field.attname) == getattr(expected.model, field.attname), field.name
    assert loaded.updated.tzinfo is not None
    assert loaded.archived is False and loaded.model.enabled is True
    assert loaded.model.input_price_per_million == Decimal("1.2500")


def test_two_related_rows_load_in_one_statement(alice, conversation, django_assert_num_queries):
    type(alice).objects.filter(pk=alice.pk).update(suspended=True)
    with django_assert_num_queries(1):
        loaded = statements.select_one(Conversation, {"id": conversation.pk}, related=("model", "owner"))
    assert loaded.model.name == "priced" and loaded.owner.username == "alice"
    assert loaded.owner.suspended is True and loaded.title == "Hello"  # the columns did not shift


def test_someone_elses_or_a_missing_conversation_is_none(bob, conversation):
    assert statements.select_one(Conversation, {"id": conversation.pk, "owner": bob.pk}, related="model") is None
    assert statements.select_one(Conversation, {"id": conversation.pk + 1000}) is None


def test_insert_sets_the_id_and_stores_every_field(conversation):
    message = Message(conversation=conversation, role="assistant", content="hé <b>", status="queued", notice="n", generator="g")
    statements.insert(message)
    assert message.pk is not None and not message._state.adding
    stored = Message.objects.get(pk=message.pk)
    for field in Message._meta.concrete_fields:
        assert getattr(stored, field.attname) == getattr(message, field.attname), field.name
    assert statements.values_by(Message, ("id", "role", "content", "status"), "conversation", conversation.pk) == [
        (message.pk, "assistant", "hé <b>", "queued")
    ]


def test_update_changes_one_row_and_respects_the_status_guard(conversation):
    first = Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    other = Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    finished = timezone.now()
    changed = statements.update(Message, first.pk, {"content": "done", "status": "complete", "finished": finished})
    assert changed == 1
    first.refresh_from_db()
    other.refresh_from_db()
    assert (first.content, first.status, first.finished) == ("done", "complete", finished)
    assert (other.content, other.status) == ("", "streaming")
    assert statements.update(Message, first.pk, {"content": "late"}, only_if=("status", Message.ACTIVE)) == 0
    first.refresh_from_db()
    assert first.content == "done"


def test_a_token_lookup_refuses_revoked_tokens_and_inactive_users(alice):
    token, raw = ApiToken.issue(alice, "script")
    assert ApiToken.user_for(raw) == alice
    token.refresh_from_db()
    assert token.last_used is not None
    assert ApiToken.user_for(raw + "x") is None
    alice.is_active = False
    alice.save()
    assert ApiToken.user_for(raw) is None
    alice.is_active = True
    alice.save()
    token.revoke()
    assert ApiToken.user_for(raw) is None
