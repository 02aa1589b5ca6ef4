"""The request id, and the user where known, carried with the work a request starts.

A request keeps a well-formed `X-Request-ID` it came with (a proxy's or a client's own), or gets a
new one; the response carries it back. It lives in context variables, so asyncio tasks started
from the request see it; Celery tasks get it in their headers (observability/tracing.py) and
threads that run work after a commit get it from `carry`. Logs read it (observability/logs.py).

A reply's generation and deferred work start from a fresh context on purpose (chat/generation.py,
parley/deferred.py): `fresh` and `carry` bring along only the request id, the user and the current
trace context, nothing else of the request's.
"""

import contextvars
import re
import uuid
from collections.abc import Callable
from typing import TypeVar

from opentelemetry import context as otel_context

HEADER = "X-Request-ID"
# Ids from outside are echoed in a header and written into every log line: short, and characters
# that need no quoting anywhere (a UUID, a hex trace id, a load balancer's "Root=1-..." id).
WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+/-]{0,127}")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("parley_request_id", default="")
user_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("parley_user_id", default=None)

T = TypeVar("T")


def new_id() -> str:
    return uuid.uuid4().hex


def accept(incoming: str | bytes | None) -> str:
    """The incoming id when it is well formed, else a new one."""
    if isinstance(incoming, bytes):
        incoming = incoming.decode("latin-1")
    if incoming and WELL_FORMED.fullmatch(incoming):
        return incoming
    return new_id()


def bind(rid: str, uid: int | None = None) -> None:
    """Set the request id (and the user, when known) for the rest of this context."""
    request_id.set(rid)
    if uid is not None:
        user_id.set(uid)


def set_user(uid: int | None) -> None:
    if uid is not None and user_id.get() != uid:
        user_id.set(uid)


def fresh() -> contextvars.Context:
    """An empty context with only the request id, the user and the trace context of this one."""
    rid, uid, trace_context = request_id.get(), user_id.get(), otel_context.get_current()
    ctx = contextvars.Context()
    ctx.run(_restore, rid, uid, trace_context)
    return ctx


def carry(fn: Callable[[], T]) -> Callable[[], T]:
    """`fn`, to run elsewhere (another thread) with the request id, user and trace context of here."""
    rid, uid, trace_context = request_id.get(), user_id.get(), otel_context.get_current()
    if not rid and uid is None and not trace_context:
        return fn

    def carried() -> T:
        return fresh_run(rid, uid, trace_context, fn)

    return carried


def fresh_run(rid: str, uid: int | None, trace_context: otel_context.Context, fn: Callable[[], T]) -> T:
    ctx = contextvars.Context()
    return ctx.run(_restore_and_call, rid, uid, trace_context, fn)


def _restore(rid: str, uid: int | None, trace_context: otel_context.Context) -> None:
    request_id.set(rid)
    user_id.set(uid)
    if trace_context:
        otel_context.attach(trace_context)


def _restore_and_call(rid: str, uid: int | None, trace_context: otel_context.Context, fn: Callable[[], T]) -> T:
    _restore(rid, uid, trace_context)
    return fn()
