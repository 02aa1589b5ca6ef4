"""Parley's settings with the two changes the benchmark points at, for a measured comparison only.

1. Persistent database connections (as bench.settings_persistent_db).
2. No sync-only middleware in the HTTP stack: WhiteNoiseMiddleware has no async support, so Django
   runs it (and SecurityMiddleware, above it) in the one thread-sensitive executor thread, which then
   blocks in async_to_sync while the rest of the request runs; HTTP requests and every
   database_sync_to_async call of the process queue behind each other there. The benchmark serves
   no static files, so it simply leaves WhiteNoise out; a deployment would serve static files
   another way (an async-capable static middleware, or the reverse proxy).

    python -m bench.load --settings bench.settings_tuned ...
"""

from parley.settings import *
from parley.settings import DATABASES, MIDDLEWARE

DATABASES["default"]["CONN_MAX_AGE"] = None
MIDDLEWARE = [m for m in MIDDLEWARE if m != "whitenoise.middleware.WhiteNoiseMiddleware"]
