"""Single-table statements for the per-request hot path, compiled once per process.

Through the ORM a single-row query costs 0.3–0.8 ms of CPU on these machines, nearly all of it
compiling the query (SQLite itself takes ~15 µs); a send and its reply ran six of them on the
database thread that every stream shares (docs/benchmarks.md). These helpers build the same SQL
from the models' own metadata (tables, columns, value preparation, result converters) once, then
only bind parameters. They skip signals and managers, which the models they serve do not use.
Anything off the hot path uses the ORM as usual.
"""

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Field, ForeignKey, Model


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _column(model: type[Model], name: str) -> str:
    return _quote(model._meta.get_field(name).column)


@dataclass(frozen=True, slots=True)
class _Columns:
    """How to select a model's concrete fields and turn them back into an instance."""

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
        return ", ".join(f"{alias}.{_quote(field.column)}" for field in self.fields)

    def build(self, values: Sequence[Any]) -> Model:
        converted = []
        for value, converters in zip(values, self.converters, strict=True):
            for converter, column in converters:
                value = converter(value, column, connection)
            converted.append(value)
        return self.model.from_db(connection.alias, [field.attname for field in self.fields], converted)


@functools.cache
def _select(
    model: type[Model], where: tuple[str, ...], related: tuple[str, ...], lock: bool, vendor: str
) -> tuple[str, _Columns, tuple[_Columns, ...]]:
    own = _Columns.of(model)
    selected = [own.select_list("a")]
    joins = []
    joined = []
    for index, name in enumerate(related):
        foreign_key = model._meta.get_field(name)
        assert isinstance(foreign_key, ForeignKey) and not foreign_key.null  # an inner join must not drop rows
        target = foreign_key.related_model
        columns = _Columns.of(target)
        alias = f"r{index}"
        selected.append(columns.select_list(alias))
        joins.append(
            f" INNER JOIN {_quote(target._meta.db_table)} {alias}"
            f" ON {alias}.{_quote(target._meta.pk.column)} = a.{_quote(foreign_key.column)}"
        )
        joined.append(columns)
    sql = f"SELECT {', '.join(selected)} FROM {_quote(model._meta.db_table)} a{''.join(joins)}"
    sql += " WHERE " + " AND ".join(f"a.{_column(model, name)} = %s" for name in where)
    if lock and connection.features.has_select_for_update_of:
        sql += " FOR UPDATE OF a"
    return sql, own, tuple(joined)


def select_one(
    model: type[Model], where: Mapping[str, Any], related: str | tuple[str, ...] = (), lock: bool = False
) -> Model | None:
    """The row whose fields equal `where` (a unique match), with the rows of the `related` foreign
    keys loaded too, or None. `lock` (in a transaction) holds the row on databases that lock rows."""
    names = (related,) if isinstance(related, str) else related
    sql, own, joined = _select(model, tuple(where), names, lock, connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, list(where.values()))
        row = cursor.fetchone()
    if row is None:
        return None
    instance = own.build(row[: len(own.fields)])
    start = len(own.fields)
    for name, columns in zip(names, joined, strict=True):
        setattr(instance, name, columns.build(row[start : start + len(columns.fields)]))
        start += len(columns.fields)
    return instance


@functools.cache
def _values(model: type[Model], columns: tuple[str, ...], where: str, vendor: str) -> str:
    names = ", ".join(_column(model, name) for name in columns)
    pk = _quote(model._meta.pk.column)
    return f"SELECT {names} FROM {_quote(model._meta.db_table)} WHERE {_column(model, where)} = %s ORDER BY {pk}"


def values_by(model: type[Model], columns: tuple[str, ...], where: str, value: Any) -> list[tuple[Any, ...]]:
    """Raw column values of the rows whose `where` field equals `value`, in primary-key order.
    Only for columns whose values need no conversion (ids, text)."""
    with connection.cursor() as cursor:
        cursor.execute(_values(model, columns, where, connection.vendor), [value])
        return [tuple(row) for row in cursor.fetchall()]


@functools.cache
def _insert(model: type[Model], vendor: str) -> tuple[str, tuple[Field, ...], bool]:
    fields = tuple(field for field in model._meta.concrete_fields if not field.primary_key)
    columns = ", ".join(_quote(field.column) for field in fields)
    sql = f"INSERT INTO {_quote(model._meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
    returning = connection.features.can_return_columns_from_insert
    if returning:
        sql += f" RETURNING {_quote(model._meta.pk.column)}"
    return sql, fields, returning


def insert(instance: Model) -> None:
    """INSERT a new instance and set its primary key."""
    sql, fields, returning = _insert(type(instance), connection.vendor)
    params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        instance.pk = cursor.fetchone()[0] if returning else cursor.lastrowid
    instance._state.adding = False
    instance._state.db = connection.alias


@functools.cache
def _update(model: type[Model], names: tuple[str, ...], guard: str | None, guard_values: int, vendor: str) -> tuple[str, tuple[Field, ...]]:
    fields = tuple(model._meta.get_field(name) for name in names)
    assignments = ", ".join(f"{_quote(field.column)} = %s" for field in fields)
    sql = f"UPDATE {_quote(model._meta.db_table)} SET {assignments} WHERE {_quote(model._meta.pk.column)} = %s"
    if guard is not None:
        sql += f" AND {_column(model, guard)} IN ({', '.join(['%s'] * guard_values)})"
    return sql, fields


def update(model: type[Model], pk: int, values: Mapping[str, Any], only_if: tuple[str, Iterable[Any]] | None = None) -> int:
    """UPDATE one row's fields by primary key; `only_if=(field, allowed values)` guards it.
    Returns the number of rows changed."""
    guard, allowed = None, []
    if only_if is not None:
        guard = only_if[0]
        guard_field = model._meta.get_field(guard)
        allowed = [guard_field.get_db_prep_save(value, connection) for value in only_if[1]]
    sql, fields = _update(model, tuple(values), guard, len(allowed), connection.vendor)
    params = [field.get_db_prep_save(values[field.name], connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, pk, *allowed])
        return cursor.rowcount
