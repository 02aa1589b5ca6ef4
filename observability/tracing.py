"""OpenTelemetry traces, off unless the standard `OTEL_*` variables ask for them.

On when OTEL_TRACES_EXPORTER names an exporter (`otlp`, `console`) or an OTLP endpoint is set
(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED=true wins over
both. The SDK reads the rest itself: the endpoint, headers and timeout of its OTLP/HTTP exporter,
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, the sampler, the batch processor's sizes.

Off, no SDK is set up: `span` hands back OpenTelemetry's invalid span, whose methods do nothing,
and nothing is exported or even allocated past that. On, each process sets up its own provider
with a batch processor: daphne when it loads parley/asgi.py, each Celery pool process at
`worker_process_init` (a forked child must not share its parent's export thread), and it is
flushed when the process ends.

The spans, each made at Parley's one place for it: the HTTP or WebSocket request
(observability/requests.py), admission (billing/calls.admit), a reply's generation
(chat/generation.py), each provider call (resilience/attempts.py, with the GenAI semantic
conventions' attributes), a Celery task's publish and its run in the worker (the W3C
`traceparent` travels in the task's headers), and an agent run (agents/runner.py). No span
carries prompt or reply text.
"""

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from observability import context

logger = logging.getLogger(__name__)

SCOPE = "parley"
EXPORTERS = ("otlp", "console", "none")
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Task headers: the request id and user travel beside the trace context.
REQUEST_ID_HEADER = "parley_request_id"
USER_ID_HEADER = "parley_user_id"

_provider: Any = None  # the SDK's TracerProvider of this process, once set up
_configured_pid: int | None = None
_tracer: trace.Tracer | None = None


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = exporter_names(environ)
    if names is not None:
        return any(name != "none" for name in names)
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def check(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse values the exporter could not use, at a process's start rather than at its first span."""
    if not wanted(environ):
        return
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    if protocol and protocol != "http/protobuf" and "otlp" in (exporter_names(environ) or ["otlp"]):
        raise ImproperlyConfigured(f"OTLP protocol {protocol!r}: Parley exports traces over http/protobuf only")


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str] | None:
    """OTEL_TRACES_EXPORTER as a list (None: not set); an unknown name is a configuration error."""
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        return None
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r} (otlp, console or none)")
    return names


def enabled() -> bool:
    return _tracer is not None


def configure(role: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Set up tracing for this process (`role`: web or worker) when the variables ask for it; once
    per process. True when traces are on."""
    global _provider, _configured_pid, _tracer
    if _configured_pid == os.getpid():
        return _tracer is not None
    _configured_pid = os.getpid()
    _provider = _tracer = None
    if not wanted(environ):
        return False
    if environ is os.environ:
        # An empty variable (compose's `${X:-}`) means unset; the SDK would take "" as the endpoint.
        for name in [*ENDPOINT_VARIABLES, "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_RESOURCE_ATTRIBUTES"]:
            if os.environ.get(name) == "":
                del os.environ[name]
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"parley.process": role})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "parley"}))
    # shutdown_on_exit: flushed at a normal exit (daphne); pool processes flush in `shutdown`.
    provider = TracerProvider(resource=resource)
    for exporter in _exporters(environ):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    _tracer = provider.get_tracer(SCOPE)
    # Set globally too, for any library that asks the API for a tracer.
    trace.set_tracer_provider(provider)
    return True


def _exporters(environ: Mapping[str, str]) -> list[Any]:
    check(environ)
    names = exporter_names(environ) or ["otlp"]
    out: list[Any] = []
    if "otlp" in names:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        out.append(OTLPSpanExporter())
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        out.append(ConsoleSpanExporter())
    return out


def shutdown() -> None:
    """Export what is left and stop (a pool process that ends without running atexit hooks)."""
    global _tracer
    if _provider is not None and _configured_pid == os.getpid():
        _tracer = None
        _provider.shutdown()


@contextmanager
def span(
    name: str, attributes: Mapping[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL, new_trace: bool = False,
) -> Iterator[Span]:
    """A span around a block, current inside it; off, the invalid span and nothing else.
    `new_trace`: the root of a trace of its own, linked to the span current here (a WebSocket
    frame's work is its own trace, not a part of the socket's hours-long one)."""
    if _tracer is None:
        yield INVALID_SPAN
        return
    parent, links = None, None
    if new_trace:
        here = trace.get_current_span().get_span_context()
        parent, links = otel_context.Context(), ([trace.Link(here)] if here.is_valid else None)
    with _tracer.start_as_current_span(name, context=parent, links=links, attributes=attributes, kind=kind) as current:
        yield current


def start(name: str, attributes: Mapping[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL,
          parent: otel_context.Context | None = None, links: list[trace.Link] | None = None) -> Span:
    """A span the caller ends, not made current: for async generators, which may be closed from
    another context than the one they started in."""
    if _tracer is None:
        return INVALID_SPAN
    return _tracer.start_span(name, context=parent, kind=kind, attributes=attributes, links=links)


def fail(current: Span, error_type: str, description: str = "") -> None:
    """Mark a span failed with the semantic conventions' `error.type` (a code, never a message that
    may quote the user's text)."""
    if current.is_recording():
        current.set_attribute("error.type", error_type)
        current.set_status(Status(StatusCode.ERROR, description or error_type))


# Celery: the publish injects the trace context and the request id; the task's run continues them.


def task_headers() -> dict[str, str]:
    """Headers for a task published from here: the W3C trace context, the request id, the user."""
    headers: dict[str, str] = {}
    if _tracer is not None:
        propagate.inject(headers)
    rid, uid = context.request_id.get(), context.user_id.get()
    if rid:
        headers[REQUEST_ID_HEADER] = rid
    if uid is not None:
        headers[USER_ID_HEADER] = str(uid)
    return headers


_running: dict[str, tuple[Span, object]] = {}


def _header(request: Any, name: str) -> str | None:
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value if isinstance(value, str) else None


def task_started(task_id: str, task: Any) -> None:
    """Celery's task_prerun: the request id and user restored, the task's span started and current."""
    request = task.request
    uid = _header(request, USER_ID_HEADER)
    context.request_id.set(_header(request, REQUEST_ID_HEADER) or task_id)
    context.user_id.set(int(uid) if uid and uid.isdigit() else None)
    if _tracer is None:
        configure("worker")  # a pool without forked children (solo, threads) never sent worker_process_init
        if _tracer is None:
            return
    carrier = {name: value for name in ("traceparent", "tracestate") if (value := _header(request, name))}
    parent = propagate.extract(carrier) if carrier else None
    task_span = _tracer.start_span(
        f"process {task.name}", context=parent, kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "celery", "messaging.operation.type": "process", "messaging.operation.name": "process",
            "messaging.destination.name": str((getattr(request, "delivery_info", None) or {}).get("routing_key") or ""),
            "messaging.message.id": task_id, "celery.task_name": task.name,
            "celery.retries": int(getattr(request, "retries", 0) or 0),
        },
    )
    token = otel_context.attach(trace.set_span_in_context(task_span))
    _running[task_id] = (task_span, token)


def task_failed(task_id: str, exception: BaseException | None) -> None:
    entry = _running.get(task_id)
    if entry is not None and exception is not None:
        entry[0].record_exception(exception)
        fail(entry[0], type(exception).__qualname__)


def task_ended(task_id: str, state: str | None) -> None:
    """Celery's task_postrun: the task's span ended, the request id cleared for the next task."""
    entry = _running.pop(task_id, None)
    context.request_id.set("")
    context.user_id.set(None)
    if entry is None:
        return
    task_span, token = entry
    if state:
        task_span.set_attribute("celery.state", state)
    task_span.end()
    otel_context.detach(token)  # type: ignore[arg-type]


def install_celery_hooks() -> None:
    """Connect the hooks above to Celery's signals (parley/celery.py calls this once)."""
    from celery import signals

    check()  # a bad value stops the worker at its start, not each pool process it forks
    signals.worker_process_init.connect(_on_worker_process_init, weak=False)
    signals.worker_process_shutdown.connect(_on_worker_process_shutdown, weak=False)
    signals.task_prerun.connect(_on_task_prerun, weak=False)
    signals.task_failure.connect(_on_task_failure, weak=False)
    signals.task_postrun.connect(_on_task_postrun, weak=False)


def _on_worker_process_init(**kwargs: Any) -> None:
    configure("worker")


def _on_worker_process_shutdown(**kwargs: Any) -> None:
    shutdown()


def _on_task_prerun(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    if task is not None:
        task_started(task_id, task)


def _on_task_failure(task_id: str = "", exception: BaseException | None = None, **kwargs: Any) -> None:
    task_failed(task_id, exception)


def _on_task_postrun(task_id: str = "", state: str | None = None, **kwargs: Any) -> None:
    task_ended(task_id, state)
