"""The ledger's move to the billing app keeps an existing installation's rows and the permissions
given on them: only the owning app changes, the tables stay."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

OLD_NODES = [("chat", "0008_message_conversation_index"), ("accounts", "0006_signin_protection")]
BEFORE = [("billing", None), *OLD_NODES]  # billing unapplied: the ledger still belongs to chat
AFTER = [("chat", "0009_ledger_moves_to_billing"), ("billing", "0001_initial")]


@pytest.mark.django_db(transaction=True)
def test_moving_the_ledger_keeps_its_rows_and_permissions():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(OLD_NODES).apps
    user = old.get_model("accounts", "User").objects.create(username="ledger-keeper")
    old.get_model("chat", "UsageRecord").objects.create(
        user=user, kind="reply", provider="demo", model="parley-demo", prompt_tokens=3, completion_tokens=4, outcome="complete"
    )
    content_type = old.get_model("contenttypes", "ContentType").objects.get_or_create(app_label="chat", model="usagerecord")[0]
    permission = old.get_model("auth", "Permission").objects.get_or_create(
        content_type=content_type, codename="view_usagerecord", defaults={"name": "Can view usage record"}
    )[0]
    group = old.get_model("auth", "Group").objects.create(name="Ledger readers")
    group.permissions.add(permission)

    executor = MigrationExecutor(connection)
    # Every app back at its newest migration: rolling chat back also unapplied the apps that
    # depend on it, and the tests after this one need their tables.
    executor.migrate(executor.loader.graph.leaf_nodes())
    executor.loader.build_graph()
    new = executor.loader.project_state(AFTER).apps
    record = new.get_model("billing", "UsageRecord").objects.get(user__username="ledger-keeper")
    assert (record.prompt_tokens, record.completion_tokens) == (3, 4)
    readers = new.get_model("auth", "Group").objects.get(name="Ledger readers")
    assert [(p.content_type.app_label, p.codename) for p in readers.permissions.all()] == [("billing", "view_usagerecord")]
