"""The statements every reply runs, compiled once per process instead of once per call.

Through the ORM a single-row query costs 0.3–0.8 ms of CPU on these machines, nearly all of it
compiling the query (SQLite itself takes ~15 µs), and a send plus its reply run six of them on
the database thread that every stream shares (docs/benchmarks.md). These helpers build the same
SQL from the models' own metadata (tables, columns, value preparation, result converters) once,
then only bind parameters. Anything off the reply path uses the ORM as usual.
"""

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Field, Model

from chat.models import ChatModel, Conversation, Message


@dataclass(frozen=True, slots=True)
class _Columns:
    """How to select a model's concrete fields and turn a row back into an instance."""

    model: type[Model]
    fields: tuple[Field, ...]
    converters: tuple[tuple[tuple[Any, Any], ...], ...]

    @classmethod
    def of(cls, model: type[Model]) -> "_Columns":
        fields = tuple(model._meta.concrete_fields)
        converters = []
        for field in fields:
            column = field.get_col(model._meta.db_table)
            found = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
            converters.append(tuple((converter, column) for converter in found))
        return cls(model, fields, tuple(converters))

    def select_list(self, alias: str) -> str:
        return ", ".join(f"{alias}.{connection.ops.quote_name(field.column)}" for field in self.fields)

    def build(self, values: Sequence[Any]) -> Model:
        converted = []
        for value, converters in zip(values, self.converters, strict=True):
            for converter, column in converters:
                value = converter(value, column, connection)
            converted.append(value)
        return self.model.from_db(connection.alias, [field.attname for field in self.fields], converted)


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(model: type[Model], name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


@functools.cache
def _conversation_query(vendor: str, lock: bool) -> tuple[str, _Columns, _Columns]:
    conversation, chat_model = _Columns.of(Conversation), _Columns.of(ChatModel)
    sql = (
        f"SELECT {conversation.select_list('c')}, {chat_model.select_list('m')} "
        f"FROM {_table(Conversation)} c INNER JOIN {_table(ChatModel)} m ON m.id = c.{_column(Conversation, 'model')} "
        f"WHERE c.id = %s AND c.{_column(Conversation, 'owner')} = %s"
    )
    if lock and connection.features.has_select_for_update_of:
        sql += " FOR UPDATE OF c"
    return sql, conversation, chat_model


def conversation_with_model(owner_id: int, conversation_id: int, lock: bool = False) -> Conversation | None:
    """The owner's conversation with its model loaded, or None.

    `lock` (in a transaction) holds the row, so that two sends into one conversation take turns on
    PostgreSQL; SQLite's immediate transactions already serialize writers.
    """
    sql, conversation_columns, model_columns = _conversation_query(connection.vendor, lock)
    with connection.cursor() as cursor:
        cursor.execute(sql, [conversation_id, owner_id])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(conversation_columns.fields)
    conversation = conversation_columns.build(row[:split])
    conversation.model = model_columns.build(row[split:])
    return conversation  # type: ignore[return-value]


@functools.cache
def _history_query(vendor: str) -> str:
    columns = ", ".join(_column(Message, name) for name in ("id", "role", "content", "status"))
    return f"SELECT {columns} FROM {_table(Message)} WHERE {_column(Message, 'conversation')} = %s ORDER BY id"


def history(conversation_id: int) -> list[tuple[int, str, str, str]]:
    """(id, role, content, status) of a conversation's messages, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(_history_query(connection.vendor), [conversation_id])
        return [tuple(row) for row in cursor.fetchall()]  # type: ignore[misc]


@functools.cache
def _insert_statement(model: type[Model], vendor: str) -> tuple[str, tuple[Field, ...], bool]:
    fields = tuple(field for field in model._meta.concrete_fields if not field.primary_key)
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {_table(model)} ({columns}) VALUES ({placeholders})"
    returning = connection.features.can_return_columns_from_insert
    if returning:
        sql += f" RETURNING {connection.ops.quote_name(model._meta.pk.column)}"
    return sql, fields, returning


def insert(instance: Model) -> None:
    """INSERT a new instance (no signals: the reply path's models have none) and set its pk."""
    sql, fields, returning = _insert_statement(type(instance), connection.vendor)
    params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        instance.pk = cursor.fetchone()[0] if returning else cursor.lastrowid
    instance._state.adding = False
    instance._state.db = connection.alias


@functools.cache
def _update_statement(model: type[Model], names: tuple[str, ...], statuses: int, vendor: str) -> tuple[str, tuple[Field, ...]]:
    fields = tuple(model._meta.get_field(name) for name in names)
    assignments = ", ".join(f"{connection.ops.quote_name(field.column)} = %s" for field in fields)
    sql = f"UPDATE {_table(model)} SET {assignments} WHERE {connection.ops.quote_name(model._meta.pk.column)} = %s"
    if statuses:
        sql += f" AND {_column(model, 'status')} IN ({', '.join(['%s'] * statuses)})"
    return sql, fields


def update(model: type[Model], pk: int, values: Mapping[str, Any], only_if_status_in: Iterable[str] = ()) -> int:
    """UPDATE one row's fields by primary key (optionally only in some statuses); returns rows changed."""
    statuses = [str(status) for status in only_if_status_in]
    sql, fields = _update_statement(model, tuple(values), len(statuses), connection.vendor)
    params = [field.get_db_prep_save(values[field.name], connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, pk, *statuses])
        return cursor.rowcount
