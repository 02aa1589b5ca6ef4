"""The SQLite full-text index's triggers, put back after a migration that rebuilt `chat_message`.

SQLite alters a column by building a new table and dropping the old one, and its triggers go with
it: after any later migration that changes a message field, the index (created by
chat/migrations/0016_message_fulltext.py) would silently stop following writes. After every
`migrate` (and test flush), missing triggers are created again and the index rebuilt from the
table, since writes in between went unseen. PostgreSQL's generated column needs nothing of this."""

from typing import Any

from django.db import connections, transaction

# As the migration creates them (tests/test_fulltext.py checks that they are the same).
TRIGGERS = {
    "chat_message_fts_insert": (
        "CREATE TRIGGER chat_message_fts_insert AFTER INSERT ON chat_message BEGIN "
        "INSERT INTO chat_message_fts (rowid, content) VALUES (new.id, new.content); END"
    ),
    "chat_message_fts_delete": (
        "CREATE TRIGGER chat_message_fts_delete AFTER DELETE ON chat_message BEGIN "
        "INSERT INTO chat_message_fts (chat_message_fts, rowid, content) VALUES ('delete', old.id, old.content); END"
    ),
    "chat_message_fts_update": (
        "CREATE TRIGGER chat_message_fts_update AFTER UPDATE OF content ON chat_message "
        "WHEN old.content IS NOT new.content BEGIN "
        "INSERT INTO chat_message_fts (chat_message_fts, rowid, content) VALUES ('delete', old.id, old.content); "
        "INSERT INTO chat_message_fts (rowid, content) VALUES (new.id, new.content); END"
    ),
}


def repair(using: str = "default") -> list[str]:
    """Create the triggers that are missing and rebuild the index; the names created."""
    connection = connections[using]
    if connection.vendor != "sqlite":
        return []
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute("SELECT type, name FROM sqlite_master WHERE name = 'chat_message_fts' OR type = 'trigger'")
        found = {(kind, name) for kind, name in cursor.fetchall()}
        if ("table", "chat_message_fts") not in found:
            return []  # migrated back before the index, or not yet to it
        missing = [name for name in TRIGGERS if ("trigger", name) not in found]
        for name in missing:
            cursor.execute(TRIGGERS[name])
        if missing:
            cursor.execute("INSERT INTO chat_message_fts (chat_message_fts) VALUES ('rebuild')")
    return missing


def after_migrate(sender: Any, using: str = "default", **kwargs: Any) -> None:
    repair(using)
