"""Parley's one settings module: environment variables with embedded defaults."""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from parley import redis_urls
from parley.env import env_bool, env_decimal, env_endpoints, env_float, env_int, env_list, env_networks, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PARLEY_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG and env_bool("PARLEY_REQUIRE_SECRET_KEY", False):
        raise ImproperlyConfigured("SECRET_KEY must be set in production (PARLEY_REQUIRE_SECRET_KEY=1).")
    SECRET_KEY = "parley-insecure-development-key-change-me"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
CSRF_FAILURE_VIEW = "parley.errors.csrf_failure"

INSTALLED_APPS = [
    "daphne",
    "parley.admin_app.ParleyAdminConfig",  # django.contrib.admin with its log-in throttled (parley/admin.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "channels",
    "accounts",
    "chat",
    "billing",
    "agents",
    "sharing",
    "support",
    "breakers",
    "shadows",
    "routing",
    "parley.checks.ChecksConfig",  # lets Django's security checks see the middleware below
]

# Django's stock middleware, with hooks that run inline instead of one thread round trip each
# (parley/middleware.py). Everything here must be async-capable: a sync-only middleware would
# push every request, SSE included, through a worker thread (docs/benchmarks.md).
MIDDLEWARE = [
    "parley.middleware.request_metrics",  # outermost: sees every final status
    "observability.middleware.probes",  # /healthz, /readyz, /metrics: before host checks, sessions, sign-in
    "parley.middleware.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",  # an async-capable whitenoise fork
    "parley.middleware.ContentSecurityPolicyMiddleware",
    "parley.middleware.SessionMiddleware",
    "parley.middleware.CommonMiddleware",
    "parley.middleware.CsrfViewMiddleware",
    "parley.middleware.AuthenticationMiddleware",
    "accounts.middleware.BearerTokenMiddleware",
    "parley.middleware.MessageMiddleware",
    "parley.middleware.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "observability.requests.RouteMiddleware",  # last: names the request's span after its URL pattern
]

ROOT_URLCONF = "parley.urls"
ASGI_APPLICATION = "parley.asgi.application"
AUTH_USER_MODEL = "accounts.User"
# Sign-in is throttled in the backend (accounts/throttle.py). Django's own backend stays listed only so
# that sessions made before the throttle keep working: the first backend ends every password check.
AUTHENTICATION_BACKENDS = ["accounts.backends.ThrottledModelBackend", "django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:home"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.csp",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL").strip() or f"sqlite:///{VAR_DIR / 'parley.sqlite3'}"
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0))}
except Exception as exc:  # dj_database_url raises several types for malformed URLs
    raise ImproperlyConfigured(f"DATABASE_URL={DATABASE_URL!r} is not a database URL: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process, the worker and readers share the file without "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
        "transaction_mode": "IMMEDIATE",
    }
    # A file, not memory, so the daphne and Celery processes that tests start share it; one per run.
    DATABASES["default"]["TEST"] = {"NAME": env_str("PARLEY_TEST_SQLITE", str(VAR_DIR / f"test-{os.getpid()}.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One server, a cluster (redis+cluster://host:port,host:port) or Sentinel
# (redis+sentinel://host:port,host:port/service[/db]): parley/redis_urls.py, docs/redis.md.
REDIS_URL = env_url("REDIS_URL", "redis://127.0.0.1:6379/0", redis_urls.ALL_SCHEMES)
try:
    REDIS_TARGET = redis_urls.parse(REDIS_URL)
except redis_urls.RedisUrlError as error:
    raise ImproperlyConfigured(f"REDIS_URL: {error}") from None
# The Sentinels' own credentials and TLS, when they ask for them (a URL's user and password are
# the primary's); only read for a redis+sentinel:// REDIS_URL.
REDIS_SENTINEL_USERNAME = env_str("REDIS_SENTINEL_USERNAME")
REDIS_SENTINEL_PASSWORD = env_str("REDIS_SENTINEL_PASSWORD")
REDIS_SENTINEL_TLS = env_bool("REDIS_SENTINEL_TLS")
# No CHANNEL_LAYERS: replies reach sockets through the event log (streaming/eventlog.py), and a channel
# layer would hold one blocking Redis read open per socket for nothing.

# Lets several Parley installations, or concurrent test runs, share one Redis without collisions.
PARLEY_KEY_PREFIX = env_str("PARLEY_KEY_PREFIX", "parley")
CELERY_TASK_DEFAULT_QUEUE = env_str("PARLEY_CELERY_QUEUE", "parley")
if REDIS_TARGET.kind != "single" and not os.environ.get("CELERY_BROKER_URL", "").strip():
    # Celery's Redis transport speaks to one server: it cannot use a cluster, nor find a primary
    # through these Sentinel URLs.
    raise ImproperlyConfigured(
        f"REDIS_URL names a Redis {REDIS_TARGET.kind}, which Celery cannot use as its broker: set "
        "CELERY_BROKER_URL to a single Redis (redis://host:port/db) or to RabbitMQ (amqp://...)."
    )
CELERY_BROKER_URL = env_url("CELERY_BROKER_URL", REDIS_URL, ("redis", "rediss", "amqp", "amqps", "unix"))
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Redis broker: a task a lost worker took is delivered again after this long. Longer than any one
# step of an agent run can take; runs resume sooner through their lease (agents/reaper.py).
# RabbitMQ gives a lost worker's tasks back as soon as its connection drops, and confirms every
# publish, so that a task the broker did not take raises in the sender instead of vanishing.
# RabbitMQ's own consumer_timeout (30 min by default) must be longer than the longest task (docs/celery.md).
PARLEY_TASK_VISIBILITY_SECONDS = env_int("PARLEY_TASK_VISIBILITY_SECONDS", 3600, minimum=60)
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"confirm_publish": True}
    if CELERY_BROKER_URL.startswith("amqp")
    else {"visibility_timeout": PARLEY_TASK_VISIBILITY_SECONDS}
)
# RabbitMQ keeps a queue nobody consumes from; with this set, one unused this long is deleted
# (x-expires), so that test runs, each with its own queue, leave none behind. Redis needs none:
# an empty queue there is no key at all.
PARLEY_CELERY_QUEUE_EXPIRES_SECONDS = env_int("PARLEY_CELERY_QUEUE_EXPIRES_SECONDS", 0, minimum=0)
# A generating process refreshes its heartbeat every PARLEY_HEARTBEAT_SECONDS; once it has been
# silent for the TTL, the reaper (every third of the TTL) ends its replies as `interrupted`. A
# crashed process's replies are so ended at most TTL + TTL / 3 (20 s) after it died.
PARLEY_HEARTBEAT_SECONDS = env_int("PARLEY_HEARTBEAT_SECONDS", 5, minimum=1)
PARLEY_HEARTBEAT_TTL = env_int("PARLEY_HEARTBEAT_TTL", 15, minimum=2)
PARLEY_REAP_SECONDS = env_float("PARLEY_REAP_SECONDS", PARLEY_HEARTBEAT_TTL / 3, minimum=0.5)
# How often each provider endpoint's model list is read again (chat/discovery.py); also at a
# worker's start, and on demand in admin.
PARLEY_MODELS_REFRESH_SECONDS = env_float("PARLEY_MODELS_REFRESH_SECONDS", 600.0, minimum=10.0)
# How often conversations past their retention period are deleted (support/retention.py); the
# periods themselves are in admin (site settings, plans).
PARLEY_RETENTION_PURGE_SECONDS = env_float("PARLEY_RETENTION_PURGE_SECONDS", 3600.0, minimum=60.0)
CELERY_BEAT_SCHEDULE = {
    "reap-interrupted-generations": {
        "task": "chat.tasks.reap_interrupted",
        "schedule": PARLEY_REAP_SECONDS,
        # A reap that waited past the next one is worth nothing: the next one does its work.
        "options": {"expires": PARLEY_REAP_SECONDS},
    },
    "resume-lost-agent-runs": {
        "task": "agents.tasks.reap_runs",
        "schedule": PARLEY_REAP_SECONDS,
        "options": {"expires": PARLEY_REAP_SECONDS},
    },
    "refresh-models": {
        "task": "chat.tasks.refresh_models",
        "schedule": PARLEY_MODELS_REFRESH_SECONDS,
        "options": {"expires": PARLEY_MODELS_REFRESH_SECONDS},
    },
    "purge-expired-conversations": {
        "task": "support.tasks.purge_expired",
        "schedule": PARLEY_RETENTION_PURGE_SECONDS,
        "options": {"expires": PARLEY_RETENTION_PURGE_SECONDS},
    },
}

# The test suite hashes thousands of passwords, each taking most of a second with Django's default
# hasher; it sets this for itself and the processes it starts. Never set it in a deployment.
TEST_PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if env_bool("PARLEY_TEST_FAST_PASSWORD_HASHER", False):
    PASSWORD_HASHERS = TEST_PASSWORD_HASHERS

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
SERVESTATIC_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_TLS_PROXY else None
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
# Strict-Transport-Security goes only with responses to HTTPS requests (behind a proxy: those it
# marked with X-Forwarded-Proto), and only once SECURE_HSTS_SECONDS is set: off in development.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Scripts, styles and connections (the WebSocket included: CSP3's 'self' matches ws: and wss: on this
# host) come from this origin only; no inline code and no eval. A template that needs inline code
# gives it the request's nonce ({% csp_nonce_attr %}), as the admin's templates do.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    "img-src": [CSP.SELF],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}
# Browser features no page of Parley's uses, turned off for it and anything it might embed. Only
# names Chromium knows: it reports an unknown one (bluetooth, say) as an error on every page.
PARLEY_PERMISSIONS_POLICY: dict[str, list[str]] = {
    feature: []
    for feature in (
        "accelerometer", "browsing-topics", "camera", "display-capture", "geolocation", "gyroscope",
        "hid", "magnetometer", "microphone", "midi", "payment", "serial", "usb", "xr-spatial-tracking",
    )
}  # fmt: skip

# Mail (cost alerts, password resets): printed to the console unless a backend is configured.
EMAIL_BACKEND_PATH = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
_mail_options: dict[str, object] = {}
if EMAIL_BACKEND_PATH.endswith("smtp.EmailBackend"):
    _mail_options = {
        "host": env_str("EMAIL_HOST", "localhost"), "port": env_int("EMAIL_PORT", 25, minimum=1, maximum=65535),
        "username": env_str("EMAIL_HOST_USER"), "password": env_str("EMAIL_HOST_PASSWORD"),
        "use_tls": env_bool("EMAIL_USE_TLS"), "timeout": 10,
    }
elif EMAIL_BACKEND_PATH.endswith("filebased.EmailBackend"):
    _mail_options = {"file_path": env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))}
MAILERS = {"default": {"BACKEND": EMAIL_BACKEND_PATH, "OPTIONS": _mail_options}}
DEFAULT_FROM_EMAIL = SERVER_EMAIL = env_str("DEFAULT_FROM_EMAIL", "parley@localhost")
# Who gets cost alerts; empty: every active superuser that has an email address.
PARLEY_ALERT_EMAILS = env_list("PARLEY_ALERT_EMAILS", [])
# Where this installation is reached, for links in emails.
PARLEY_PUBLIC_URL = env_url("PARLEY_PUBLIC_URL", "http://127.0.0.1:8000", ("http", "https")).rstrip("/")
# The whole site's monthly budget in USD, for the site-wide cost alerts; empty: no site alerts.
PARLEY_SITE_BUDGET_USD = env_decimal("PARLEY_SITE_BUDGET_USD")

# Providers: each is offered only when configured; the demo model needs nothing.
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_url("OPENAI_BASE_URL", "", ("http", "https"))
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY")
ANTHROPIC_BASE_URL = env_url("ANTHROPIC_BASE_URL", "", ("http", "https"))
# More endpoints at once, each with its own key: `name=URL` or `name=URL|KEYVAR`, comma-separated
# (docs in README.md, "Several providers at once"). OpenAI-compatible servers, and Anthropic-compatible ones.
PARLEY_OPENAI_ENDPOINTS = env_endpoints("PARLEY_OPENAI_ENDPOINTS")
PARLEY_ANTHROPIC_ENDPOINTS = env_endpoints(
    "PARLEY_ANTHROPIC_ENDPOINTS", frozenset(name for name, _, _ in PARLEY_OPENAI_ENDPOINTS)
)
PARLEY_MODELS_LIST_TIMEOUT = env_float("PARLEY_MODELS_LIST_TIMEOUT", 10.0, minimum=0.5)
# Off: a newly listed model waits for an admin to enable it (the official APIs list dozens).
PARLEY_NEW_MODELS_ENABLED = env_bool("PARLEY_NEW_MODELS_ENABLED", True)
PARLEY_DEMO_MODEL = env_bool("PARLEY_DEMO_MODEL", True)
PARLEY_DEMO_TOKENS_PER_SECOND = env_float("PARLEY_DEMO_TOKENS_PER_SECOND", 40.0, minimum=0.0)

PROVIDER_CONNECT_TIMEOUT = env_float("PROVIDER_CONNECT_TIMEOUT", 10.0, minimum=0.1)
PROVIDER_FIRST_TOKEN_TIMEOUT = env_float("PROVIDER_FIRST_TOKEN_TIMEOUT", 60.0, minimum=0.1)
PROVIDER_IDLE_TIMEOUT = env_float("PROVIDER_IDLE_TIMEOUT", 30.0, minimum=0.1)
# Retries the SDKs make themselves, unseen by Parley: none, since Parley retries (below) where it
# can count each attempt, honour the breakers and fail over.
PROVIDER_MAX_RETRIES = env_int("PROVIDER_MAX_RETRIES", 0, minimum=0, maximum=10)
# Parley's retries before a reply's first token (resilience/retry.py): tries of one model before
# the next in its failover chain, the backoff steps (full jitter), the longest `retry-after` waited
# for, and how long after a call began no new attempt starts.
PARLEY_RETRY_ATTEMPTS = env_int("PARLEY_RETRY_ATTEMPTS", 3, minimum=1, maximum=10)
PARLEY_RETRY_BASE_SECONDS = env_float("PARLEY_RETRY_BASE_SECONDS", 0.5, minimum=0.0)
PARLEY_RETRY_MAX_BACKOFF_SECONDS = env_float("PARLEY_RETRY_MAX_BACKOFF_SECONDS", 8.0, minimum=0.0)
PARLEY_RETRY_AFTER_CAP_SECONDS = env_float("PARLEY_RETRY_AFTER_CAP_SECONDS", 20.0, minimum=0.0)
PARLEY_RETRY_DEADLINE_SECONDS = env_float("PARLEY_RETRY_DEADLINE_SECONDS", 90.0, minimum=1.0)
# How long the response cache keeps a reply, for models that opted in (resilience/cache.py).
PARLEY_CACHE_SECONDS = env_int("PARLEY_CACHE_SECONDS", 86400, minimum=1)

# Circuit breakers (breakers/), one per provider endpoint and model, shared by every process through
# Redis: PARLEY_BREAKER_FAILURES retryable failures (rate limited, overloaded, timeout, unavailable)
# within the window open it; calls are then refused at once for the cool-down, after which one call
# (the probe) is let through and its outcome closes or reopens it. A probe not reported within
# PARLEY_BREAKER_PROBE_SECONDS (by default as long as a call may wait for its first token) is
# presumed lost with its process, and the next caller probes instead.
PARLEY_BREAKER_FAILURES = env_int("PARLEY_BREAKER_FAILURES", 5, minimum=1)
PARLEY_BREAKER_WINDOW_SECONDS = env_float("PARLEY_BREAKER_WINDOW_SECONDS", 30.0, minimum=0.1)
PARLEY_BREAKER_COOLDOWN_SECONDS = env_float("PARLEY_BREAKER_COOLDOWN_SECONDS", 15.0, minimum=0.1)
PARLEY_BREAKER_PROBE_SECONDS = env_float(
    "PARLEY_BREAKER_PROBE_SECONDS", PROVIDER_CONNECT_TIMEOUT + PROVIDER_FIRST_TOKEN_TIMEOUT, minimum=0.1
)

# The streaming pipeline.
PARLEY_MAX_GENERATIONS = env_int("PARLEY_MAX_GENERATIONS", 240, minimum=1)
PARLEY_MESSAGE_MAX_CHARS = env_int("PARLEY_MESSAGE_MAX_CHARS", 32_000, minimum=1)
# The most text one protocol door call (gateway/) may carry, its whole history and system prompt
# together; the model's context window is the real bound, this one keeps absurd bodies out early.
PARLEY_GATEWAY_MAX_CHARS = env_int("PARLEY_GATEWAY_MAX_CHARS", 2_000_000, minimum=1)
PARLEY_MAX_OUTPUT_TOKENS = env_int("PARLEY_MAX_OUTPUT_TOKENS", 2048, minimum=1)
PARLEY_FLUSH_MS_MIN = env_int("PARLEY_FLUSH_MS_MIN", 30, minimum=1, maximum=1000)
PARLEY_FLUSH_MS_MAX = env_int("PARLEY_FLUSH_MS_MAX", 100, minimum=1, maximum=2000)
PARLEY_STREAM_TTL = env_int("PARLEY_STREAM_TTL", 3600, minimum=10)
PARLEY_CHECKPOINT_FIRST_SECONDS = env_float("PARLEY_CHECKPOINT_FIRST_SECONDS", 2.0, minimum=0.1)
PARLEY_CHECKPOINTS_MAX = env_int("PARLEY_CHECKPOINTS_MAX", 6, minimum=0)
PARLEY_SSE_KEEPALIVE_SECONDS = env_float("PARLEY_SSE_KEEPALIVE_SECONDS", 15.0, minimum=0.1)

# Agent runs (agents/). A worker holds a run's lease while it works on it, refreshing it four times
# a lease; a run whose lease lapsed is resumed by another worker, at most PARLEY_RUN_RESUMES times.
PARLEY_RUN_LEASE_SECONDS = env_float("PARLEY_RUN_LEASE_SECONDS", 10.0, minimum=1.0)
PARLEY_RUN_RESUMES = env_int("PARLEY_RUN_RESUMES", 3, minimum=0)
PARLEY_MAX_ACTIVE_RUNS = env_int("PARLEY_MAX_ACTIVE_RUNS", 3, minimum=1)  # per user: queued, running or waiting
PARLEY_RUN_GOAL_MAX_CHARS = env_int("PARLEY_RUN_GOAL_MAX_CHARS", 4000, minimum=1)

# Files attached to a conversation (chat/uploads.py). The bytes are kept in one database row each.
PARLEY_UPLOAD_MAX_BYTES = env_int("PARLEY_UPLOAD_MAX_BYTES", 5 * 1024 * 1024, minimum=1, maximum=100 * 1024 * 1024)
PARLEY_UPLOADS_PER_CONVERSATION = env_int("PARLEY_UPLOADS_PER_CONVERSATION", 20, minimum=0)
# Anthropic refuses an image over 5 MB of base64: 3.75 MiB of bytes. Images are also held to PARLEY_UPLOAD_MAX_BYTES.
PARLEY_IMAGE_MAX_BYTES = env_int("PARLEY_IMAGE_MAX_BYTES", 3840 * 1024, minimum=1, maximum=100 * 1024 * 1024)
# The largest request body Django holds in memory (files are streamed to disk, not counted): a
# protocol door's call carries its images inline as base64, a third larger than the image, so the
# body must hold PARLEY_IMAGE_MAX_BYTES of image and some text beside it.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("PARLEY_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=64 * 1024, maximum=256 * 1024 * 1024)
# The most files one message may carry.
PARLEY_ATTACHMENTS_PER_MESSAGE = env_int("PARLEY_ATTACHMENTS_PER_MESSAGE", 10, minimum=0, maximum=100)
# A file's text beyond this is not kept (a 5 MiB text file would otherwise be 5 million characters).
PARLEY_UPLOAD_MAX_TEXT_CHARS = env_int("PARLEY_UPLOAD_MAX_TEXT_CHARS", 1_000_000, minimum=1)
# Plans and overrides are read on every model call: a process may apply an admin's edit this much later.
PARLEY_LIMITS_CACHE_SECONDS = env_float("PARLEY_LIMITS_CACHE_SECONDS", 5.0, minimum=0)

# Share links (sharing/): a user's links not yet revoked, and links made in any one hour.
PARLEY_SHARES_MAX_ACTIVE = env_int("PARLEY_SHARES_MAX_ACTIVE", 100, minimum=1)
PARLEY_SHARES_PER_HOUR = env_int("PARLEY_SHARES_PER_HOUR", 30, minimum=1)

# Sign-in and sign-up throttles (accounts/throttle.py explains the scopes and why).
PARLEY_SIGNIN_FAILURES = env_int("PARLEY_SIGNIN_FAILURES", 5, minimum=1)  # one account from one address
PARLEY_SIGNIN_ADDRESS_FAILURES = env_int("PARLEY_SIGNIN_ADDRESS_FAILURES", 20, minimum=1)  # one address, any accounts
PARLEY_SIGNIN_ACCOUNT_FAILURES = env_int("PARLEY_SIGNIN_ACCOUNT_FAILURES", 50, minimum=1)  # one account, any addresses
PARLEY_SIGNIN_WINDOW_SECONDS = env_int("PARLEY_SIGNIN_WINDOW_SECONDS", 900, minimum=1)
PARLEY_SIGNIN_LOCK_SECONDS = env_int("PARLEY_SIGNIN_LOCK_SECONDS", 30, minimum=1)
PARLEY_SIGNIN_LOCK_MAX_SECONDS = env_int("PARLEY_SIGNIN_LOCK_MAX_SECONDS", 900, minimum=1)
PARLEY_SIGNUPS_PER_HOUR = env_int("PARLEY_SIGNUPS_PER_HOUR", 3, minimum=1)  # per address
# Proxies in front of Parley that append the client's address to X-Forwarded-For; 0: trust no header.
PARLEY_TRUSTED_PROXIES = env_int("PARLEY_TRUSTED_PROXIES", 0, minimum=0, maximum=10)

# Observability (docs/metrics.md): who may read /metrics besides loopback (observability/access.py
# says which address counts), and how long /readyz waits for each part it checks.
PARLEY_METRICS_ALLOW = env_networks("PARLEY_METRICS_ALLOW")
PARLEY_METRICS_TOKEN = env_str("PARLEY_METRICS_TOKEN")
# A Celery worker in a container of its own has no HTTP door: with a port set, its main process
# serves its processes' metrics there (0: off). No sign-in: keep it on a private network.
PARLEY_WORKER_METRICS_PORT = env_int("PARLEY_WORKER_METRICS_PORT", 0, minimum=0)
PARLEY_WORKER_METRICS_ADDRESS = env_str("PARLEY_WORKER_METRICS_ADDRESS", "127.0.0.1")
PARLEY_PROBE_TIMEOUT_SECONDS = env_float("PARLEY_PROBE_TIMEOUT_SECONDS", 1.0, minimum=0.05)

if PARLEY_SIGNIN_LOCK_MAX_SECONDS < PARLEY_SIGNIN_LOCK_SECONDS:
    raise ImproperlyConfigured("PARLEY_SIGNIN_LOCK_MAX_SECONDS must not be below PARLEY_SIGNIN_LOCK_SECONDS.")

if PARLEY_FLUSH_MS_MAX < PARLEY_FLUSH_MS_MIN:
    raise ImproperlyConfigured("PARLEY_FLUSH_MS_MAX must not be below PARLEY_FLUSH_MS_MIN.")
if PARLEY_HEARTBEAT_TTL <= PARLEY_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("PARLEY_HEARTBEAT_TTL must be longer than PARLEY_HEARTBEAT_SECONDS.")

def _not_a_busy_refusal(record: object) -> bool:
    """A 503 `busy` is admission control doing its job, not a server error worth an ERROR line."""
    return getattr(record, "status_code", None) != 503


# text: one readable line per record (local runs); json: one JSON object per line with the request
# id, user, trace and span ids and any extra fields, for a log collector (docs/observability.md).
PARLEY_LOG_FORMAT = env_str("PARLEY_LOG_FORMAT", "text").lower()
if PARLEY_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"PARLEY_LOG_FORMAT must be text or json, not {PARLEY_LOG_FORMAT!r}.")
# A JSON worker keeps this configuration; Celery's own would replace it with its text format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = PARLEY_LOG_FORMAT == "text"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "observability.logs.JsonFormatter"},
    },
    "filters": {
        "not_busy": {"()": "django.utils.log.CallbackFilter", "callback": _not_a_busy_refusal},
        "context": {"()": "observability.logs.ContextFilter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json" if PARLEY_LOG_FORMAT == "json" else "plain",
                    "filters": ["not_busy", "context"]},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # pypdf warns about each flaw of a broken PDF; a user's broken upload is refused with the reason (chat/uploads.py).
    "loggers": {"django.channels.server": {"level": "WARNING"}, "pypdf": {"level": "ERROR"}},
}
