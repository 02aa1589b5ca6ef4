"""A full-text index over messages' text, kept by the database itself (support/fulltext.py reads it).

The database maintains it, so every write path stays in step without our code: ORM saves, the
streaming core's single-statement updates (parley/statements.py), bulk inserts, deletes.

- PostgreSQL: a generated `search_vector` column (no model field: it exists only here) with a GIN
  index. The 'simple' configuration: no stemming and no stop words, because conversations come in
  any language, and because a match must be re-checked word for word against the masked text.
  ASCII punctuation becomes a space first, so that text splits into words as SQLite's unicode61
  splits it: PostgreSQL's parser would otherwise keep `alice@example.com`, `example.com/refund` or
  `v1.2` as single tokens, and "refund" would find a message on one database and not the other.
  Only the first 100,000 characters are indexed: a tsvector holds at most 1 MB, and a longer one
  would make the write itself fail.
- SQLite: an FTS5 table over `chat_message.content` (external content: the text is not stored
  twice), kept by triggers, filled once from the existing rows.

SQLite drops a table's triggers when a later migration rebuilds `chat_message` (how SQLite alters
a column); support/fulltext_index.py puts them back after every `migrate`, with the same SQL."""

from django.db import migrations

# As an SQL string literal (its quote doubled); each becomes a space. Not [[:punct:]]: under a UTF-8
# locale that class holds combining marks too, and would split e.g. Hindi words apart.
ASCII_PUNCTUATION = "!\"#$%&''()*+,-./:;<=>?@[\\]^_`{|}~"

PG_FORWARD = [
    "ALTER TABLE chat_message ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
    f"to_tsvector('simple'::regconfig, translate(left(content, 100000), '{ASCII_PUNCTUATION}', repeat(' ', 32)))) STORED",
    "CREATE INDEX chat_message_search ON chat_message USING gin (search_vector)",
]
PG_BACKWARD = [
    "DROP INDEX IF EXISTS chat_message_search",
    "ALTER TABLE chat_message DROP COLUMN IF EXISTS search_vector",
]

SQLITE_FORWARD = [
    "CREATE VIRTUAL TABLE chat_message_fts USING fts5("
    "content, content='chat_message', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER chat_message_fts_insert AFTER INSERT ON chat_message BEGIN "
    "INSERT INTO chat_message_fts (rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER chat_message_fts_delete AFTER DELETE ON chat_message BEGIN "
    "INSERT INTO chat_message_fts (chat_message_fts, rowid, content) VALUES ('delete', old.id, old.content); END",
    # A save that rewrites every column leaves the index alone when the text did not change.
    "CREATE TRIGGER chat_message_fts_update AFTER UPDATE OF content ON chat_message "
    "WHEN old.content IS NOT new.content BEGIN "
    "INSERT INTO chat_message_fts (chat_message_fts, rowid, content) VALUES ('delete', old.id, old.content); "
    "INSERT INTO chat_message_fts (rowid, content) VALUES (new.id, new.content); END",
    "INSERT INTO chat_message_fts (chat_message_fts) VALUES ('rebuild')",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS chat_message_fts_insert",
    "DROP TRIGGER IF EXISTS chat_message_fts_delete",
    "DROP TRIGGER IF EXISTS chat_message_fts_update",
    "DROP TABLE IF EXISTS chat_message_fts",
]

FORWARD = {"postgresql": PG_FORWARD, "sqlite": SQLITE_FORWARD}
BACKWARD = {"postgresql": PG_BACKWARD, "sqlite": SQLITE_BACKWARD}


def run(statements: dict[str, list[str]]):
    def apply(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql, params=None)

    return apply


class Migration(migrations.Migration):
    dependencies = [("chat", "0015_provider_endpoints")]

    operations = [migrations.RunPython(run(FORWARD), run(BACKWARD), elidable=False)]
