"""Log lines: one JSON object per line when PARLEY_LOG_FORMAT=json, and never a user's or a model's
text unless an admin asked for it.

Every line gets the request id and user of the work that logged it (observability/context.py) and,
with traces on, the current trace and span ids, so a line leads to its trace. Text (a prompt, a
reply, a tool's error that may quote its arguments) goes into a log only through `text()`: a short
hash and the length, the same for the same text, unless the site settings' "log message text"
switch is on (accounts.SiteSettings, read at most once every few seconds per process: an admin's
switch, not an environment variable).
"""

import hashlib
import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from daphne.access import AccessLogGenerator
from django.db.models.signals import post_save
from opentelemetry import trace

from observability import context

# What every LogRecord has; anything else on a record came as `extra=` and is written as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id", "user_id"}


class ContextFilter(logging.Filter):
    """Puts the request id and the user on every record (also for the plain text format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = context.request_id.get()
        record.user_id = context.user_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or context.request_id.get() or None,
            "user_id": getattr(record, "user_id", None) or context.user_id.get(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class JsonAccessLog(AccessLogGenerator):
    """daphne's access log as log records (so JSON lines too), instead of NCSA lines on stdout."""

    logger = logging.getLogger("parley.access")

    def __init__(self) -> None:
        super().__init__(None)

    def write_entry(
        self, host: str, date: object, request: str, status: int | None = None, length: int | None = None,
        ident: str | None = None, user: str | None = None,
    ) -> None:
        self.logger.info("%s %s", request, status or "-", extra={"client": host, "status": status, "size": length})


class Text:
    """A user's or a model's text as a log argument: its hash and length, or the text itself while
    the admin switch is on. Decided when the line is formatted, so a line below the log level costs
    nothing."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __str__(self) -> str:
        return self.value if text_logging_on() else digest(self.value)

    __repr__ = __str__


def text(value: object) -> Text:
    return Text(value if isinstance(value, str) else str(value))


def digest(value: str) -> str:
    """`sha256:<12 hex> (<n> chars)`: the same text gives the same digest, so lines can be matched."""
    return f"sha256:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:12]} ({len(value)} chars)"


# The admin switch, per process: read afresh at most every PARLEY_LIMITS_CACHE_SECONDS, like plans. Code on an event
# loop never waits for the database: it uses the value it has (off at first) and a thread reads it.
_switch = {"on": False, "until": 0.0}
_reading = threading.Lock()


def text_logging_on() -> bool:
    if time.monotonic() >= _switch["until"] and _reading.acquire(blocking=False):
        if _on_event_loop():
            threading.Thread(target=_read_switch, name="parley-log-switch", daemon=True).start()
        else:
            _read_switch()
    return bool(_switch["on"])


def forget_switch(**_signal: object) -> None:
    """Read the switch afresh next time: an admin's save applies in this process at once, in the
    others within seconds."""
    _switch["until"] = 0.0


# Named by its label, not imported: accounts.models is read by this module only when needed.
post_save.connect(forget_switch, sender="accounts.SiteSettings", dispatch_uid="parley-log-switch")


def _read_switch() -> None:
    """Runs holding `_reading`, which it releases."""
    from django.conf import settings
    from django.db import connection

    from accounts.models import SiteSettings

    started_on_own_thread = threading.current_thread().name == "parley-log-switch"
    try:
        _switch["on"] = bool(SiteSettings.objects.filter(pk=1).values_list("log_message_text", flat=True).first())
    except Exception:  # no table yet (a first migrate), a database away: keep the text out
        _switch["on"] = False
    finally:
        _switch["until"] = time.monotonic() + settings.PARLEY_LIMITS_CACHE_SECONDS
        _reading.release()
        if started_on_own_thread:
            connection.close()


def _on_event_loop() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
