"""Every Prometheus metric Parley exports, defined here and nowhere else, with the small functions
the instrumented places call (docs/metrics.md lists them with their labels).

Each function does a constant amount of work and is called once per request, reply, ledger row or
task, never per token. With PROMETHEUS_MULTIPROC_DIR set (observability/multiproc.py) the values go
to files every process shares and `render()` merges them; without it a process serves its own.
Breaker states and agent runs by state are read at scrape time instead (`_LiveCollector`), from
Redis and the database, cached a few seconds: they are facts about the site, not about a process.
"""

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from observability import multiproc

logger = logging.getLogger(__name__)

# The process's own metrics; in multiprocess mode their values live in the shared files instead.
REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds: a cached reply answers in milliseconds, a slow model's first token can take a minute.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
REPLY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0, 600.0)
TASK_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

HTTP_REQUESTS = Counter(
    "parley_http_requests_total", "HTTP requests answered, by URL pattern (never the raw path), method and status.",
    ["route", "method", "status"], registry=REGISTRY,
)
ACTIVE_STREAMS = Gauge(
    "parley_active_streams", "Replies generating now (generation slots in use, every process).",
    registry=REGISTRY, multiprocess_mode="livesum",
)
WEBSOCKETS = Gauge(
    "parley_websocket_connections", "Open signed-in chat WebSockets (every process).",
    registry=REGISTRY, multiprocess_mode="livesum",
)
TIME_TO_FIRST_TOKEN = Histogram(
    "parley_time_to_first_token_seconds", "From a reply's start to its first token, by the model that answered.",
    ["model"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
REPLY_DURATION = Histogram(
    "parley_reply_duration_seconds", "A reply's whole duration, by the model that answered and how it ended.",
    ["model", "status"], buckets=REPLY_BUCKETS, registry=REGISTRY,
)
TOKENS_USED = Counter(
    "tokens_used_total", "Tokens billed in the ledger, by provider, model and direction (input or output).",
    ["provider", "model", "direction"], registry=REGISTRY,
)
COST = Counter(
    "parley_cost_usd_total", "Cost billed in the ledger in USD, by provider and model.",
    ["provider", "model"], registry=REGISTRY,
)
MODEL_ERRORS = Counter(
    "model_errors_total", "Model calls and attempts the ledger records as failed, by error code.",
    ["code"], registry=REGISTRY,
)
RATE_LIMIT_REFUSALS = Counter(
    "parley_rate_limit_refusals_total", "Model calls refused by a plan's limit, by limit.",
    ["limit"], registry=REGISTRY,
)
ADMISSION_REFUSALS = Counter(
    "parley_admission_refusals_total",
    "Replies refused before they started: slots_full (the process runs its most replies) or the code admit refused with.",
    ["reason"], registry=REGISTRY,
)
CELERY_TASKS = Counter(
    "parley_celery_tasks_total", "Celery tasks run, by task and outcome (success, failure, retry, ...).",
    ["task", "outcome"], registry=REGISTRY,
)
CELERY_TASK_DURATION = Histogram(
    "parley_celery_task_duration_seconds", "How long Celery tasks ran, by task.",
    ["task"], buckets=TASK_BUCKETS, registry=REGISTRY,
)

# Read at scrape time (`_LiveCollector`); named here so the docs and the dashboard test see them.
BREAKER_STATE = "parley_breaker_state"
AGENT_RUNS = "parley_agent_runs"
LIVE_SECONDS = 5.0  # how long a scrape's reading of breakers and runs is reused


# The instrumented places call these.

def request_answered(route: str, method: str, status: int) -> None:
    HTTP_REQUESTS.labels(route, method, str(status)).inc()


def stream_started() -> None:
    ACTIVE_STREAMS.inc()


def stream_ended() -> None:
    ACTIVE_STREAMS.dec()


def socket_opened() -> None:
    WEBSOCKETS.inc()


def socket_closed() -> None:
    WEBSOCKETS.dec()


def reply_ended(model: str, status: str, ttft_ms: int | None, duration_ms: int | None) -> None:
    if ttft_ms is not None:
        TIME_TO_FIRST_TOKEN.labels(model).observe(ttft_ms / 1000)
    if duration_ms is not None:
        REPLY_DURATION.labels(model, status).observe(duration_ms / 1000)


def billed(provider: str, model: str, prompt_tokens: int, completion_tokens: int, cost_usd: Decimal, error_code: str) -> None:
    """One ledger row, once its transaction has committed: the counters follow the ledger exactly."""
    if prompt_tokens:
        TOKENS_USED.labels(provider, model, "input").inc(prompt_tokens)
    if completion_tokens:
        TOKENS_USED.labels(provider, model, "output").inc(completion_tokens)
    if cost_usd:
        COST.labels(provider, model).inc(float(cost_usd))
    if error_code:
        MODEL_ERRORS.labels(error_code).inc()


def admission_refused(reason: str, limit: str | None = None) -> None:
    ADMISSION_REFUSALS.labels(reason).inc()
    if limit:
        RATE_LIMIT_REFUSALS.labels(limit).inc()


_task_starts: dict[str, float] = {}


def task_started(task_id: str) -> None:
    _task_starts[task_id] = time.monotonic()


def task_ended(task_id: str, task: str, outcome: str) -> None:
    CELERY_TASKS.labels(task, outcome.lower()).inc()
    started = _task_starts.pop(task_id, None)
    if started is not None:
        CELERY_TASK_DURATION.labels(task).observe(time.monotonic() - started)


def process_ended(pid: int | None = None) -> None:
    """A process is gone: its live gauges stop counting (its counters stay in the sums)."""
    directory = multiproc.current_dir()
    if directory:
        mark_process_dead(pid or os.getpid(), directory)


if multiproc.current_dir():
    # A process that exits normally takes its live gauges with it; Celery's pool children exit
    # without atexit, so parley/celery.py calls `process_ended` for them.
    atexit.register(process_ended)


# Scrape-time readings.

class _LiveCollector:
    """Breaker states and agent runs by state, read when scraped and reused for LIVE_SECONDS."""

    def __init__(self, read: Callable[[], list[Metric]]) -> None:
        self.read = read
        self.lock = threading.Lock()
        self.cached: list[Metric] = []
        self.at = -LIVE_SECONDS

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            if time.monotonic() - self.at >= LIVE_SECONDS:
                try:
                    self.cached = self.read()
                except Exception:  # a scrape still answers with everything else
                    logger.exception("Metrics: %s could not be read", self.read.__name__)
                    self.cached = []
                self.at = time.monotonic()
            return iter(list(self.cached))


def _breakers() -> list[Metric]:
    from breakers.models import STATES
    from breakers.status import UNKNOWN, snapshot

    family = GaugeMetricFamily(
        BREAKER_STATE, "Circuit breakers by provider endpoint and model: 1 for the state each is in now.",
        labels=["endpoint", "model", "state"],
    )
    states = [state for state, _ in STATES] + [UNKNOWN]
    for breaker in snapshot():
        for state in states:
            family.add_metric([breaker.endpoint, breaker.model, state], 1.0 if breaker.state == state else 0.0)
    return [family]


def _agent_runs() -> list[Metric]:
    from django.db.models import Count

    from agents.models import AgentRun

    family = GaugeMetricFamily(AGENT_RUNS, "Agent runs in the database, by state.", labels=["state"])
    counts = dict(AgentRun.objects.order_by().values_list("status").annotate(Count("id")))
    for state, _ in AgentRun.Status.choices:
        family.add_metric([state], counts.get(state, 0))
    return [family]


LIVE = (_LiveCollector(_breakers), _LiveCollector(_agent_runs))


class _Sources:
    def __init__(self, sources: Iterable[object]) -> None:
        self.sources = list(sources)

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()  # type: ignore[attr-defined]


def _forget_dead_processes(directory: str) -> None:
    """A process killed outright (SIGKILL, the OOM killer) ran no cleanup: its live gauges would
    count forever. The directory is this host's own, so a pid that is gone is a dead process."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, directory)
        except PermissionError:
            pass  # alive, someone else's


def render() -> bytes:
    """The text exposition: every process's metrics when they share a directory, else this one's,
    and the scrape-time readings. Reads the database: call it from a thread, not the event loop."""
    directory = multiproc.current_dir()
    if directory:
        _forget_dead_processes(directory)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)
        own: object = merged
    else:
        own = REGISTRY
    return generate_latest(_Sources([own, *LIVE]))  # type: ignore[arg-type]


class _WorkerProcesses:
    """The worker's processes' metrics (the main one and its pool), without the scrape-time readings:
    breakers and runs are the site's, served by the web processes, and would be counted twice."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        _forget_dead_processes(self.directory)
        yield from MultiProcessCollector(None, path=self.directory).collect()


def serve_worker_metrics(address: str, port: int) -> None:
    """A Celery worker in a container of its own has no HTTP door: its main process serves its
    counts (tasks, the ledger rows its steps bill) on `address:port`, on a thread of its own."""
    from prometheus_client import start_http_server

    directory = multiproc.current_dir()
    registry = CollectorRegistry()
    if directory:
        registry.register(_WorkerProcesses(directory))  # type: ignore[arg-type]
    else:
        registry = REGISTRY
    start_http_server(port, addr=address, registry=registry)
    logger.info("Worker metrics served on %s:%d", address, port)


SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names() -> set[str]:
    """The sample names a scrape can show (`tokens_used_total`, `..._bucket`, ...); `_created`
    samples left out, since the multiprocess exposition has none."""
    names = {BREAKER_STATE, AGENT_RUNS}
    for family in REGISTRY.collect():
        names.update(f"{family.name}{suffix}" for suffix in SAMPLE_SUFFIXES[family.type])
    return names
