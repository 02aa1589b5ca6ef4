"""Parley's settings with persistent database connections, for a measured comparison only.

parley/settings.py forces CONN_MAX_AGE=0 for SQLite, so every database hop of a request or a reply
opens a connection (running the PRAGMA init command) and closes it (with WAL, the last close also
checkpoints). `python -m bench.load --settings bench.settings_persistent_db` shows what that costs.
"""

from parley.settings import *
from parley.settings import DATABASES

DATABASES["default"]["CONN_MAX_AGE"] = None
