"""Settings of the demo project: everything comes from environment variables.

See ``.env.example`` at the repository root for every variable and its default.
"""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from channels_kit.conf import (
    channel_layers_from_env,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. `make up` generates one into .env; "
            "set it yourself when running the image elsewhere."
        )
    SECRET_KEY = "insecure-debug-only-key"
# ".localhost" is localhost and every *.localhost name (browsers resolve them all to
# loopback), so the WebSocket domain of ROUTING=domain (ws.localhost) works out of the box.
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ".localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "channels_kit",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "chat",
]

MIDDLEWARE = [
    "channels_kit.middleware.ServedByMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files when nothing sits in front (a platform, `make native-up`); behind the
    # stack's nginx, which serves them itself, it is left out (DJANGO_SERVE_STATIC=false).
    *(["whitenoise.middleware.WhiteNoiseMiddleware"] if env_bool("DJANGO_SERVE_STATIC", True) else []),
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chat.faults.FaultInjectionMiddleware",
    # Last, so that its process_exception sees a view's database errors first: 503, not 500.
    "channels_kit.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "chatdemo.urls"
WSGI_APPLICATION = "chatdemo.wsgi.application"
ASGI_APPLICATION = "chatdemo.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ],
        },
    },
]

conn_max_age = env_int("POSTGRES_CONN_MAX_AGE", 0)
if env_str("DATABASE_URL"):
    # A platform's database (postgres://user:password@host:port/name, sqlite:///path, ...).
    DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL"), conn_max_age=conn_max_age)}
elif env_str("POSTGRES_HOST"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": env_str("POSTGRES_HOST"),
            "PORT": env_int("POSTGRES_PORT", 5432),
            "NAME": env_str("POSTGRES_DB", "chat"),
            "USER": env_str("POSTGRES_USER", "chat"),
            "PASSWORD": env_str("POSTGRES_PASSWORD"),
            "CONN_MAX_AGE": conn_max_age,
            "OPTIONS": {"connect_timeout": env_int("POSTGRES_CONNECT_TIMEOUT", 5)},
        }
    }
else:
    # No database server configured: a file next to the project, for local runs.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web and workers) write to one file: wait for the lock rather
    # than fail, and take it up front so that no transaction has to be retried.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# CHANNELS_ENABLED=false: no channel layer at all, a plain WSGI site (docs/paas.md):
# pages and history work, live chat, long-poll and background tasks say they are off.
CHANNELS_ENABLED = env_bool("CHANNELS_ENABLED", True)
if CHANNELS_ENABLED:
    CHANNEL_LAYERS = channel_layers_from_env()

# Request bodies: nginx enforces the same limit (MAX_REQUEST_BYTES) in front.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 1024 * 1024)
# Longest chat message accepted, in characters (the WebSocket frame limit is Daphne's).
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 2000)
CHAT_HISTORY_SIZE = env_int("CHAT_HISTORY_SIZE", 50)
# A reconnecting socket (`?after=<id>`) gets at most this many missed messages, none older
# than this many seconds; beyond that its "recovered" frame says the recovery is not complete.
CHAT_RECOVERY_LIMIT = env_int("CHAT_RECOVERY_LIMIT", 200)
CHAT_RECOVERY_SECONDS = env_int("CHAT_RECOVERY_SECONDS", 3600)
# Host (no port) the chat page opens its WebSocket on; empty: the page's own host.
# `make up` sets it to ASGI_DOMAIN when ROUTING=domain.
CHAT_SOCKET_HOST = env_str("CHAT_SOCKET_HOST")
# GET /poll/<room>/ waits this long for a message before answering 204; `?timeout=`
# may ask for another wait, at most LONGPOLL_MAX_TIMEOUT (keep it below DAPHNE_HTTP_TIMEOUT).
LONGPOLL_TIMEOUT = env_float("LONGPOLL_TIMEOUT", 25.0)
LONGPOLL_MAX_TIMEOUT = env_float("LONGPOLL_MAX_TIMEOUT", 60.0)

# Share of requests answered 500 (0-1), to try staged rollouts on (chat.faults).
DEMO_FAULT_RATE = env_float("DEMO_FAULT_RATE", 0.0)

SESSION_COOKIE_HTTPONLY = True
# Empty: the cookie belongs to the exact host that set it. Set it to the parent domain
# (".example.com") for ROUTING=domain to share the login between www. and ws. hosts.
SESSION_COOKIE_DOMAIN = env_str("DJANGO_SESSION_COOKIE_DOMAIN") or None
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if env_bool("DJANGO_BEHIND_TLS", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles"))

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"},
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["stdout"], "level": LOG_LEVEL, "propagate": False},
        "daphne": {"handlers": ["stdout"], "level": LOG_LEVEL, "propagate": False},
    },
}
