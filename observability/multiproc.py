"""Where every process of one Parley run writes its metrics, so that any one of them serves the sum.

prometheus-client's multiprocess mode: each process (daphne, the Celery worker and its prefork
children) writes its counters, gauges and histograms to memory-mapped files named by its pid in
PROMETHEUS_MULTIPROC_DIR, and `/metrics` merges every file it finds there. The variable has to be
in a process's environment before prometheus_client is imported, so launchers (parley/devserver.py,
tests/live.py) set it for their children; this module imports nothing of prometheus_client.

The directory is emptied at the start of each run: files left by an earlier run would be summed
with this one's, and a dead process's live gauges would count forever.
"""

import os
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def fresh_dir(path: Path) -> str:
    """Make `path` an empty metrics directory (only metric files are removed) and return it."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return str(path)


def current_dir() -> str | None:
    """This process's metrics directory, or None when it serves only its own metrics."""
    return os.environ.get(ENV) or None
