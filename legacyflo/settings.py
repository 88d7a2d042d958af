"""LegacyFlo settings: the one settings module, every knob read from the environment.

Development (`make run`) gets its secrets from `var/dev.env`, written on first run; tests get
theirs from the `legacyflo.pytest_env` plugin. Production must set at least SECRET_KEY,
LEGACYFLO_ENCRYPTION_KEYS, ALLOWED_HOSTS, DATABASE_URL and REDIS_URL.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import dj_database_url

from legacyflo.env import ImproperEnv, env_bool, env_int, env_int_or_off, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("LEGACYFLO_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    raise ImproperEnv("SECRET_KEY is not set (use SECRET_KEY or SECRET_KEY_FILE; `make run` writes one)")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

AUTH_USER_MODEL = "accounts.User"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "legacyflo",
    "accounts",
    "buckets",
    "requests_app",
    "providers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "legacyflo.urls"
WSGI_APPLICATION = "legacyflo.wsgi.application"

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
                "accounts.context_processors.tenant",
            ],
        },
    },
]

_database_url = env_str("DATABASE_URL")
if not _database_url:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        _database_url or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The portal and its workers are separate processes: WAL lets readers and one writer work
    # together, IMMEDIATE transactions avoid lock-upgrade deadlocks, and waits are generous.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"})
    # A file (not memory) so that worker subprocesses started by tests share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production serves hashed, compressed files collected by `manage.py collectstatic`; development
# and tests serve straight from static/ through WhiteNoise's finders.
_manifest_static = not DEBUG and env_bool("LEGACYFLO_MANIFEST_STATIC", True)
STATIC_ROOT = BASE_DIR / "staticfiles" if _manifest_static else None
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if _manifest_static
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not _manifest_static

# Mail (invitations, password reset). Console backend unless an SMTP URL-ish config is given.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "LegacyFlo <legacyflo@localhost>")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 20, minimum=1)  # seconds; a run's mail never waits longer

# Security. Production (DEBUG off) gets HTTPS-only cookies and HSTS; override behind plain HTTP.
_secure = not DEBUG and env_bool("LEGACYFLO_HTTPS", True)
SESSION_COOKIE_SECURE = _secure
CSRF_COOKIE_SECURE = _secure
SECURE_SSL_REDIRECT = _secure and env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if _secure else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _secure
SECURE_HSTS_PRELOAD = _secure and env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("LEGACYFLO_BEHIND_PROXY", False) else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600, minimum=300)
X_FRAME_OPTIONS = "DENY"

# The client's address (login throttling, audit log). Default: the connection's peer (REMOTE_ADDR).
# Behind reverse proxies name the header they set (X-Forwarded-For, X-Real-IP) and how many
# proxies append to it: the address is read that many entries from the right, so whatever a
# client writes into the header itself is never believed.
LEGACYFLO_CLIENT_IP_HEADER = env_str("LEGACYFLO_CLIENT_IP_HEADER", "") or ""
if LEGACYFLO_CLIENT_IP_HEADER and not re.fullmatch(r"[A-Za-z0-9-]+", LEGACYFLO_CLIENT_IP_HEADER):
    raise ImproperEnv(f"LEGACYFLO_CLIENT_IP_HEADER={LEGACYFLO_CLIENT_IP_HEADER!r} is not an HTTP header name")
LEGACYFLO_TRUSTED_PROXY_COUNT = env_int("LEGACYFLO_TRUSTED_PROXY_COUNT", 1, minimum=1)

# Brute-force protection. Login: N failures per (account, client address) within the window lock
# that pair out for a window; a looser limit applies per address whatever the account. Retyping
# one's password while signed in (password change) counts the same, plus N per account. Password
# reset: at most so many mails per address and per client address within its window.
LEGACYFLO_LOGIN_MAX_FAILURES = env_int("LEGACYFLO_LOGIN_MAX_FAILURES", 5, minimum=1)
LEGACYFLO_LOGIN_IP_MAX_FAILURES = env_int("LEGACYFLO_LOGIN_IP_MAX_FAILURES", 50, minimum=1)
LEGACYFLO_LOGIN_WINDOW_SECONDS = env_int("LEGACYFLO_LOGIN_WINDOW_SECONDS", 900, minimum=1)
LEGACYFLO_PASSWORD_RESET_MAX_PER_EMAIL = env_int("LEGACYFLO_PASSWORD_RESET_MAX_PER_EMAIL", 3, minimum=1)
LEGACYFLO_PASSWORD_RESET_MAX_PER_IP = env_int("LEGACYFLO_PASSWORD_RESET_MAX_PER_IP", 20, minimum=1)
LEGACYFLO_PASSWORD_RESET_WINDOW_SECONDS = env_int("LEGACYFLO_PASSWORD_RESET_WINDOW_SECONDS", 3600, minimum=1)
SILENCED_SYSTEM_CHECKS = ["security.W021"] if not SECURE_HSTS_PRELOAD else []

# Credentials at rest: MultiFernet keys, newest first. `manage.py credentials_rotate` re-encrypts.
LEGACYFLO_ENCRYPTION_KEYS = env_list("LEGACYFLO_ENCRYPTION_KEYS")
if not LEGACYFLO_ENCRYPTION_KEYS:
    raise ImproperEnv(
        "LEGACYFLO_ENCRYPTION_KEYS is not set: give one or more Fernet keys, newest first, "
        "comma-separated (or LEGACYFLO_ENCRYPTION_KEYS_FILE). Generate one with "
        "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
    )

# Network policy: loopback/private/link-local targets are refused unless the operator allows them.
LEGACYFLO_ALLOW_PRIVATE_NETWORKS = env_bool("LEGACYFLO_ALLOW_PRIVATE_NETWORKS", False)

# AWS: the portal's own identity (an IAM role or user ARN), which role buckets' trust policies name.
# It may only call sts:AssumeRole; unset, tenants cannot register role buckets.
LEGACYFLO_AWS_PRINCIPAL_ARN = env_str("LEGACYFLO_AWS_PRINCIPAL_ARN", "").strip()
if LEGACYFLO_AWS_PRINCIPAL_ARN and not re.match(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/\S+$", LEGACYFLO_AWS_PRINCIPAL_ARN):
    raise ImproperEnv(f"LEGACYFLO_AWS_PRINCIPAL_ARN={LEGACYFLO_AWS_PRINCIPAL_ARN!r} is not the ARN of an IAM role or "
                      "user (arn:aws:iam::123456789012:role/legacyflo)")

# Queue.
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": env_int("LEGACYFLO_JOB_TIMEOUT", 7 * 24 * 3600)},
}
RQ_SHOW_ADMIN_LINK = False
# RQ workers `manage.py worker` runs (requests at once on this machine): one per core by default.
LEGACYFLO_WORKER_CONCURRENCY = env_int("LEGACYFLO_WORKER_CONCURRENCY", os.cpu_count() or 1, minimum=1)
# 0: each RQ worker runs its jobs in its own process (requests_app.rqworkers.InProcessWorker);
# 1: RQ forks a work horse per job. A worker runs at most MAX_JOBS jobs, then a fresh one replaces it.
LEGACYFLO_WORKER_FORK = env_bool("LEGACYFLO_WORKER_FORK", False)
LEGACYFLO_WORKER_MAX_JOBS = env_int("LEGACYFLO_WORKER_MAX_JOBS", 200, minimum=1)
# The cache holds short-lived shared state (login and password-reset throttles): Redis, so every
# web process sees the same counters. Keys are prefixed; nothing ever clears the whole database.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                "KEY_PREFIX": "legacyflo"},
}

# Transfers.
LEGACYFLO_PART_SIZE = env_int("LEGACYFLO_PART_SIZE", 8 * 1024 * 1024, minimum=5 * 1024 * 1024)
# A PST's first part (its header) is written last; this much of it may be uploaded before.
# Unset: everything on AWS S3, 224 MiB elsewhere (connectors.storage.s3.growing.default_max_ahead).
LEGACYFLO_S3_MAX_AHEAD_BYTES = (env_int("LEGACYFLO_S3_MAX_AHEAD_BYTES", 0, minimum=0)
                                if env_str("LEGACYFLO_S3_MAX_AHEAD_BYTES") else None)
LEGACYFLO_PST_SPLIT_BYTES = env_int("LEGACYFLO_PST_SPLIT_BYTES", 20 * 1024**3, minimum=1024 * 1024)
# 0 (the default): one FILE.zip; otherwise volumes FILE.part001.zip, ... of at most this size.
LEGACYFLO_ZIP_SPLIT_BYTES = env_int_or_off("LEGACYFLO_ZIP_SPLIT_BYTES", minimum=1024 * 1024)
LEGACYFLO_WORK_DIR = Path(env_str("LEGACYFLO_WORK_DIR", str(VAR_DIR / "work")))
LEGACYFLO_CSV_MAX_ROWS = env_int("LEGACYFLO_CSV_MAX_ROWS", 10000, minimum=1)

# Provider endpoints (tests and private deployments point these at local fakes).
GOOGLE_AUTH_URI = env_str("GOOGLE_AUTH_URI", "https://accounts.google.com/o/oauth2/auth")
GOOGLE_TOKEN_URI = env_str("GOOGLE_TOKEN_URI", "https://oauth2.googleapis.com/token")
GOOGLE_REVOKE_URI = env_str("GOOGLE_REVOKE_URI", "https://oauth2.googleapis.com/revoke")
GMAIL_API_URL = env_str("GMAIL_API_URL", "https://gmail.googleapis.com/")
GMAIL_IMAP_HOST = env_str("GMAIL_IMAP_HOST", "imap.gmail.com")
MICROSOFT_AUTHORITY_HOST = env_str("MICROSOFT_AUTHORITY_HOST", "https://login.microsoftonline.com")
MICROSOFT_GRAPH_URL = env_str("MICROSOFT_GRAPH_URL", "https://graph.microsoft.com/v1.0")
MICROSOFT_IMAP_HOST = env_str("MICROSOFT_IMAP_HOST", "outlook.office365.com")
LEGACYFLO_CA_BUNDLE = env_str("LEGACYFLO_CA_BUNDLE", "")  # extra CA for provider endpoints (tests)

# Error reports hide credentials (sensitive_variables / sensitive_post_parameters) with DEBUG on too.
DEFAULT_EXCEPTION_REPORTER_FILTER = "legacyflo.errorreports.AlwaysSafeExceptionReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # imapclient logs every command at DEBUG, including LOGIN arguments: keep it quiet.
        "imapclient": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

# Recovery: a running request whose heartbeat is older than this is considered interrupted
# (worker killed) and re-queued by every worker's recovery loop.
LEGACYFLO_STALE_AFTER_SECONDS = env_int("LEGACYFLO_STALE_AFTER_SECONDS", 180, minimum=10)
LEGACYFLO_HEARTBEAT_SECONDS = env_int("LEGACYFLO_HEARTBEAT_SECONDS", 10, minimum=1)
LEGACYFLO_JOB_RETRIES = env_int("LEGACYFLO_JOB_RETRIES", 3, minimum=0)
LEGACYFLO_MAX_ATTEMPTS = env_int("LEGACYFLO_MAX_ATTEMPTS", 8, minimum=1)
# At most this many running requests per tenant; the others wait queued (requests_app.limits).
LEGACYFLO_TENANT_MAX_RUNNING = env_int("LEGACYFLO_TENANT_MAX_RUNNING", 10, minimum=1)
# A plan's run not started this long after its slot mails the plan's recipients.
LEGACYFLO_PLAN_LATE_SECONDS = env_int("LEGACYFLO_PLAN_LATE_SECONDS", 3600, minimum=60)
# Days after which a completed request's per-message records are deleted from the database (its
# report.csv in the bucket stays); 0 keeps them for ever.
LEGACYFLO_RECORD_RETENTION_DAYS = env_int("LEGACYFLO_RECORD_RETENTION_DAYS", 0, minimum=0)
# Extra CA certificates (PEM file) trusted for IMAP servers, e.g. an on-premises server's own CA.
LEGACYFLO_IMAP_CA_FILE = env_str("LEGACYFLO_IMAP_CA_FILE", "")
# How long an archive download link (a presigned S3 URL) stays valid, in seconds.
LEGACYFLO_DOWNLOAD_SECONDS = env_int("LEGACYFLO_DOWNLOAD_SECONDS", 300, minimum=10)

# Provider connections (providers/). XOAUTH2 tokens are only ever sent to these IMAP endpoints
# (never to a host typed into a request), and OAuth redirect URIs are built on the public URL
# (empty: from the incoming request, which is right unless a proxy rewrites the host).
GMAIL_IMAP_PORT = env_int("GMAIL_IMAP_PORT", 993, minimum=1)
MICROSOFT_IMAP_PORT = env_int("MICROSOFT_IMAP_PORT", 993, minimum=1)
LEGACYFLO_PUBLIC_URL = (env_str("LEGACYFLO_PUBLIC_URL", "") or "").rstrip("/")
# OAuth client libraries log request bodies and tokens at DEBUG (requests-oauthlib prints the
# code verifier, the Basic auth header with the client secret and the refresh token): never below
# WARNING, whatever LOG_LEVEL says.
LOGGING["loggers"].update({name: {"level": "WARNING"} for name in (
    "requests_oauthlib", "oauthlib", "msal", "google.auth", "google_auth_oauthlib", "googleapiclient")})
