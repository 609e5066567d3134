"""palmsweb settings, read from the environment.

Nothing set gives the embedded mode: a SQLite file and a server-less Celery broker under
``var/``, DEBUG on (``dev.py run`` turns it off unless given ``--debug``), demo accounts
allowed. Setting ``DATABASE_URL`` (PostgreSQL) switches to
production mode, where secrets must come from the environment and ``check --deploy`` passes.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import timedelta
from pathlib import Path

from palmsweb.lib.dburl import parse_database_url, sqlite_database

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PALMSWEB_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "")
    return [item.strip() for item in value.split(",") if item.strip()] or default


DATABASE_URL = os.environ.get("DATABASE_URL", "")
# Embedded mode: everything on this machine, no services. Production: DATABASE_URL is set.
EMBEDDED = not DATABASE_URL
TESTING = env_bool("PALMSWEB_TESTING", False)


def embedded_secret_key() -> str:
    """A per-checkout key kept under var/, so sessions survive restarts in embedded mode."""
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


if EMBEDDED:
    SECRET_KEY = os.environ.get("SECRET_KEY") or embedded_secret_key()
else:
    # Production never invents a secret: a missing key must stop the process.
    SECRET_KEY = os.environ.get("SECRET_KEY", "")
    if not SECRET_KEY:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is set.")

DEBUG = env_bool("DEBUG", EMBEDDED)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if EMBEDDED else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "template_partials",
    "django_htmx",
    "rest_framework",
    "knox",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "palmsweb",
    "curation",
    "training",
    "evaluation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "palmsweb.lib.http.RejectNulMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a lockout into the 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "palmsweb.urls"
WSGI_APPLICATION = "palmsweb.wsgi.application"

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
                "palmsweb.context_processors.roles",
                "palmsweb.context_processors.profiles",
            ],
        },
    }
]

if EMBEDDED:
    SQLITE_PATH = Path(os.environ.get("PALMSWEB_SQLITE_PATH", VAR_DIR / "palmsweb.sqlite3"))
    DATABASES = {"default": sqlite_database(SQLITE_PATH)}
else:
    DATABASES = {"default": parse_database_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out username or address before any password check.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "staticfiles"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request otherwise
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or TESTING or EMBEDDED
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Embedded mode serves static files straight from the source folders (no collectstatic),
# also with DEBUG off, which `dev.py run` uses unless given --debug.
WHITENOISE_USE_FINDERS = EMBEDDED

# Model weights, adapters, exports. Shared between web and workers in production.
ARTIFACTS_DIR = Path(os.environ.get("ARTIFACTS_DIR", VAR_DIR / "artifacts"))
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- cache (login rate limits, throttles) ------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": REDIS_URL}}
elif TESTING:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    # A file cache is shared by every process of the embedded mode (web + worker).
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                          "LOCATION": str(VAR_DIR / "cache")}}

# --- sign-in limits (django-axes) ----------------------------------------------------------
LOGIN_RATE_LIMIT = int(os.environ.get("LOGIN_RATE_LIMIT", "5"))  # failures per window
LOGIN_RATE_WINDOW_SECONDS = int(os.environ.get("LOGIN_RATE_WINDOW_SECONDS", "900"))
# Behind a TLS proxy the operator trusts (the docker-compose one): read the client's address
# from the proxy's X-Forwarded-For and the scheme from X-Forwarded-Proto. Off, both headers
# are ignored: anyone can send them.
PALMSWEB_TRUSTED_PROXY = env_bool("PALMSWEB_TRUSTED_PROXY", False)
# Failures are counted per username and, separately, per client address; either one past
# the limit locks sign-in (page and API token) for the window. Callables, so both settings
# above are read when a request comes.
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_FAILURE_LIMIT = "palmsweb.views.login_failure_limit"
AXES_COOLOFF_TIME = "palmsweb.views.login_cooloff"
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "palmsweb.lib.clientip.client_ip"
AXES_USERNAME_CALLABLE = "palmsweb.views.login_username"
AXES_LOCKOUT_CALLABLE = "palmsweb.views.locked_out"
AXES_VERBOSE = False

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL == "filesystem://":
    # kombu's filesystem transport: messages are files in one folder that every process
    # on this machine reads and writes, so no broker server is needed.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    for folder in ("queue", "processed", "control"):  # kombu creates none of them with parents
        (BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)
    # The filesystem transport has no fanout, which remote control needs.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_TASK_IGNORE_RESULT = True  # results live in the database, not a result backend
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Every task that loads a model goes to the "gpu" queue; the routes live here only, so
# call sites send tasks without naming a queue. A fine-tune needing N devices per node goes
# to "gpu-xN", which only workers with N or more devices consume (palmsweb/lib/gpu_queues.py);
# the router comes first and leaves every other task to the fixed routes.
CELERY_TASK_ROUTES = ["palmsweb.lib.gpu_queues.route_by_devices"]
CELERY_TASK_ROUTES += [{
    "training.tasks.run_finetune": {"queue": "gpu"},
    "training.tasks.run_sampling": {"queue": "gpu"},
    "training.tasks.run_screening": {"queue": "gpu"},
    "evaluation.tasks.run_capability_scoring": {"queue": "gpu"},
    "evaluation.tasks.run_adherence_scoring": {"queue": "gpu"},
    "evaluation.tasks.measure_misalignment_persona": {"queue": "gpu"},
    "evaluation.tasks.measure_finetune_persona": {"queue": "gpu"},
    "evaluation.tasks.measure_realignment_persona": {"queue": "gpu"},
    "evaluation.tasks.measure_gate_persona": {"queue": "gpu"},
    "training.tasks.join_finetune": {"queue": "gpu"},
}]
CELERY_TASK_SOFT_TIME_LIMIT = int(os.environ.get("CELERY_TASK_SOFT_TIME_LIMIT", 6 * 3600))
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 300
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers on the gpu queue replace their child process after this many jobs (0: never) or
# once it holds this many kB (0: no limit), so model memory goes back after each job
# (palmsweb/celery.py applies them to gpu workers only).
GPU_WORKER_MAX_TASKS_PER_CHILD = int(os.environ.get("GPU_WORKER_MAX_TASKS_PER_CHILD", 1)) or None
GPU_WORKER_MAX_MEMORY_PER_CHILD = int(os.environ.get("GPU_WORKER_MAX_MEMORY_PER_CHILD", 0)) or None
# Local fine-tunes trade ~20% speed for about half the peak memory (docs/engine.md).
FINETUNE_ACTIVATION_CHECKPOINTING = os.environ.get("FINETUNE_ACTIVATION_CHECKPOINTING") == "1"
# Distributed fine-tunes: the memory of one accelerator decides DDP (a replica fits) or FSDP2
# at launch; the first node of a multi-node run serves the c10d rendezvous at this address,
# which the other nodes must reach (default: this host's name; port 29400 as torchrun's).
GPU_DEVICE_MEMORY_GB = float(os.environ.get("GPU_DEVICE_MEMORY_GB", 80))
DISTRIBUTED_RDZV_HOST = os.environ.get("DISTRIBUTED_RDZV_HOST", "")
DISTRIBUTED_RDZV_PORT = int(os.environ.get("DISTRIBUTED_RDZV_PORT", 29400))
# Energy and CO2e per job (palmsweb/lib/compute.py): the grid's carbon intensity, a setting
# (nothing is looked up online; the default is a rough world average), and the power assumed
# per device when CodeCarbon cannot run at all.
GRID_CARBON_INTENSITY_G_PER_KWH = float(os.environ.get("GRID_CARBON_INTENSITY_G_PER_KWH", 475))
ENERGY_FALLBACK_WATTS_CPU = float(os.environ.get("ENERGY_FALLBACK_WATTS_CPU", 65))
ENERGY_FALLBACK_WATTS_GPU = float(os.environ.get("ENERGY_FALLBACK_WATTS_GPU", 350))

# Which backend samples local models on a gpu worker (training/engine/vllm_sampling.py):
# "auto" (vLLM when installed and a CUDA device is present, else the batched generator),
# "vllm" (refuse to sample without it) or "transformers" (never vLLM).
SAMPLING_ENGINE = os.environ.get("SAMPLING_ENGINE", "auto")
VLLM_GPU_MEMORY_UTILIZATION = float(os.environ.get("VLLM_GPU_MEMORY_UTILIZATION", 0.85))

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "palmsweb.lib.drf.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "palmsweb.lib.drf.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {"user": "2000/hour"},
}
# API tokens (django-rest-knox): hashed, expiring; clients send "Authorization: Token <key>".
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=int(os.environ.get("API_TOKEN_TTL_DAYS", "30"))),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "palmsweb API",
    "DESCRIPTION": "Curate PALMS datasets, snapshot them, run fine-tunes and blinded studies.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two choice sets are called "mode": a study's rating mode, and what a reader of the
    # pairwise results may see. Name them, rather than let a hash suffix do it.
    "ENUM_NAME_OVERRIDES": {
        "StudyModeEnum": "evaluation.choices.StudyMode",
        "ResultsViewModeEnum": ["arms", "blinded", "arm-free"],
        "ArmEnum": "training.models.ModelVersion.Arm",
        "PairVerdictEnum": "evaluation.choices.PairVerdict",
    },
    # Every operation's 400/401/403/404/429 answers, documented (palmsweb.lib.openapi).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "palmsweb.lib.openapi.add_error_responses",
    ],
}

# --- integrations (switched on by their keys) ----------------------------------------------
# The environment variables a worker may send as an API key (palmsweb.lib.keyenv), and the
# endpoint hosts it may send them to (empty: any host). SECRET_KEY, DATABASE_URL and the
# other connection strings are never sent, whatever this list says.
PALMSWEB_KEY_ENVS = env_list(
    "PALMSWEB_KEY_ENVS",
    ["OPENAI_API_KEY", "PERSPECTIVE_API_KEY", "TOGETHER_API_KEY", "JUDGE_API_KEY"],
)
PALMSWEB_ENDPOINT_HOSTS = env_list("PALMSWEB_ENDPOINT_HOSTS", [])
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
# Together AI's OpenAI-compatible URL: its fine-tuned models are sampled there, and the SDK
# reaches its fine-tuning API at the same host (training.engine.hosted.together).
TOGETHER_BASE_URL = os.environ.get("TOGETHER_BASE_URL", "https://api.together.xyz/v1")
PERSPECTIVE_API_KEY = os.environ.get("PERSPECTIVE_API_KEY", "")

# --- hosted providers' dates ----------------------------------------------------------------
# Per provider: from when it takes no new fine-tuning jobs, and when each hosted model family
# shuts down (every model fine-tuned from it goes with it). OpenAI's are from its
# deprecations page (notice of 2026-05-07). HOSTED_PROVIDER_DATES in the environment is JSON
# in the same shape, merged over these per provider (its model_shutdowns are merged too):
#   HOSTED_PROVIDER_DATES='{"openai": {"no_new_jobs_from": "2027-02-01"}}'
HOSTED_PROVIDER_DATES_DEFAULT = {
    "openai": {
        "label": "OpenAI",
        "no_new_jobs_from": "2027-01-06",
        "model_shutdowns": {
            "gpt-4o": "2027-01-14",
            "gpt-4o-mini": "2027-01-14",
            "gpt-4.1": "2027-01-14",
            "gpt-4.1-mini": "2027-01-14",
            "gpt-4.1-nano": "2026-10-23",
            "o4-mini": "2026-10-23",
        },
    },
    # Together announces no date for fine-tuning to end, and its model listing gives no
    # retirement dates: add a family's date here (or in the environment) when it retires one.
    "together": {"label": "Together AI", "model_shutdowns": {}},
}


def hosted_provider_dates(default: dict, override_json: str) -> dict:
    """``default`` with the environment's JSON override merged in, provider by provider."""
    merged = {name: {**dates, "model_shutdowns": dict(dates.get("model_shutdowns", {}))}
              for name, dates in default.items()}
    for name, dates in (json.loads(override_json) if override_json.strip() else {}).items():
        entry = merged.setdefault(name, {"label": name, "model_shutdowns": {}})
        entry["model_shutdowns"].update(dates.get("model_shutdowns", {}))
        entry.update({key: value for key, value in dates.items() if key != "model_shutdowns"})
    return merged


HOSTED_PROVIDER_DATES = hosted_provider_dates(
    HOSTED_PROVIDER_DATES_DEFAULT, os.environ.get("HOSTED_PROVIDER_DATES", "")
)
# A study that is not closed warns when one of its arms' models shuts down within this many
# days (a study has no planned closing date to compare with).
HOSTED_SHUTDOWN_WARNING_DAYS = int(os.environ.get("HOSTED_SHUTDOWN_WARNING_DAYS", "30"))

# --- security -----------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads nothing from it: the token is in hx-headers
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Production (DATABASE_URL set) is HTTPS-only; the embedded mode serves plain HTTP on this
# machine whether DEBUG is on or off.
HTTPS_ONLY = not DEBUG and not EMBEDDED
if PALMSWEB_TRUSTED_PROXY:
    # Only a proxy the operator vouches for may say the client spoke HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The container health check probes plain HTTP from inside: /healthz never redirects.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
if HTTPS_ONLY:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # django-axes logs every sign-in at INFO; failures and lockouts are WARNINGs.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}

if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# --- jobs ---------------------------------------------------------------------------------
# A running job whose heartbeat is older than this is taken as dead (its worker was killed).
JOB_HEARTBEAT_TIMEOUT = int(os.environ.get("JOB_HEARTBEAT_TIMEOUT", "120"))
# The misalignment gate and re-alignment: the largest persona shift (projection units on the
# base model's direction) that still passes / counts as recovered. On SmolLM2-135M a benign
# fine-tune shifts +0.14 and 3 epochs of bad advice +2.1 (docs/misalignment.md).
PERSONA_SHIFT_TOLERANCE = float(os.environ.get("PALMSWEB_PERSONA_SHIFT_TOLERANCE", "0.5"))
CELERY_BEAT_SCHEDULE = {
    "sweep-stale-jobs": {"task": "training.tasks.sweep_stale_jobs", "schedule": 60.0,
                         "options": {"queue": "default"}},
    "poll-openai-jobs": {"task": "training.tasks.poll_openai_jobs", "schedule": 30.0,
                         "options": {"queue": "default"}},
    # Backstop: opening a study also schedules its own checks, and its page polls.
    "sync-sampling-studies": {"task": "evaluation.tasks.sync_sampling_studies",
                              "schedule": 30.0, "options": {"queue": "default"}},
    "advance-cooccurrence-runs": {"task": "evaluation.tasks.advance_cooccurrence_runs",
                                  "schedule": 60.0, "options": {"queue": "default"}},
    "sweep-stale-scoring-runs": {"task": "evaluation.tasks.sweep_stale_scoring_runs",
                                 "schedule": 300.0, "options": {"queue": "default"}},
    "sweep-stale-exports": {"task": "evaluation.tasks.sweep_stale_exports",
                            "schedule": 300.0, "options": {"queue": "default"}},
    "advance-misalignment-evals": {"task": "evaluation.tasks.advance_misalignment_evals",
                                   "schedule": 60.0, "options": {"queue": "default"}},
    "advance-realignment-runs": {"task": "evaluation.tasks.advance_realignment_runs",
                                 "schedule": 60.0, "options": {"queue": "default"}},
    "advance-model-gates": {"task": "evaluation.tasks.advance_model_gates",
                            "schedule": 60.0, "options": {"queue": "default"}},
    # Resume misalignment evaluations whose judging worker died (stale heartbeat).
    "sweep-stale-misalignment-judging": {
        "task": "evaluation.tasks.sweep_stale_misalignment_judging",
        "schedule": 60.0, "options": {"queue": "default"}},
}
