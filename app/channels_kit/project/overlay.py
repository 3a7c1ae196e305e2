"""The kit's production settings, applied over a project's own at run time.

A typical project's settings hard-code what production must change: ``DEBUG = True``, a
development ``SECRET_KEY``, SQLite, a Redis at ``127.0.0.1:6379``. ``apply()`` takes the
project's settings as they are and replaces what the deployment's environment decides,
one named setting at a time, keeping a record of each change (never a secret's value).

``PROJECT_SETTINGS_OVERLAY=off`` runs the project's settings untouched;
``PROJECT_SETTINGS_KEEP=DATABASES,LOGGING`` keeps the named ones as the project has them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from channels_kit.conf import (
    channel_backend,
    channel_layers_from_env,
    env_bool,
    env_int,
    env_list,
    env_secret,
    env_str,
    export_secret_files,
)

PROJECT_SETTINGS_VARIABLE = "KIT_PROJECT_SETTINGS"
OVERLAY_VARIABLE = "PROJECT_SETTINGS_OVERLAY"
KEEP_VARIABLE = "PROJECT_SETTINGS_KEEP"
DEFAULT_ALLOWED_HOSTS = ".localhost,127.0.0.1,[::1]"
# Persistent database connections: a new PostgreSQL connection for every message a worker or
# consumer handles costs far more than the work (docs/using-the-kit.md).
DEFAULT_CONN_MAX_AGE = 60
SERVED_BY = "channels_kit.middleware.ServedByMiddleware"
DATABASE_UNAVAILABLE = "channels_kit.middleware.DatabaseUnavailableMiddleware"
WHITENOISE = "whitenoise.middleware.WhiteNoiseMiddleware"
SECURITY = "django.middleware.security.SecurityMiddleware"
KIT_URLCONF = "channels_kit.project.urls"


@dataclass(frozen=True)
class Change:
    """One setting the overlay replaced: what the project had, what runs, why."""

    setting: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.before} -> {self.after}"


Settings = dict[str, Any]
# An override: the project's settings -> the new value, or None to leave the setting alone.
Override = Callable[[Settings], Any]


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def describe_database(database: dict[str, Any] | None) -> str:
    if not database:
        return "none"
    engine = str(database.get("ENGINE", "?")).rsplit(".", 1)[-1]
    where = database.get("HOST") or ""
    if where and database.get("PORT"):
        where = f"{where}:{database['PORT']}"
    age = database.get("CONN_MAX_AGE", 0)
    kept = "connections kept for the request" if age == 0 else f"connections kept {age} s"
    if age is None:
        kept = "connections kept"
    return f"{engine} {where + '/' if where else ''}{database.get('NAME', '')} ({kept})"


def describe_layers(layers: dict[str, Any] | None) -> str:
    default = (layers or {}).get("default")
    if not default:
        return "none"
    hosts = []
    for host in default.get("CONFIG", {}).get("hosts", []):
        if isinstance(host, dict):
            hosts.append(mask_url(str(host.get("address", "?"))))
        elif isinstance(host, list | tuple):
            hosts.append(":".join(str(part) for part in host))
        else:
            hosts.append(mask_url(str(host)))
    where = f" {', '.join(hosts)}" if hosts else ""
    return f"{default.get('BACKEND', '?')}{where}"


def secret_key(project: Settings) -> Any:
    key = env_secret("DJANGO_SECRET_KEY")
    return key or None


def debug(project: Settings) -> Any:
    return env_bool("DJANGO_DEBUG", False)


def allowed_hosts(project: Settings) -> Any:
    return env_list("DJANGO_ALLOWED_HOSTS", DEFAULT_ALLOWED_HOSTS)


def csrf_trusted_origins(project: Settings) -> Any:
    return env_list("DJANGO_CSRF_TRUSTED_ORIGINS") or None


def session_cookie_domain(project: Settings) -> Any:
    return env_str("DJANGO_SESSION_COOKIE_DOMAIN") or None


def sqlite_options(database: dict[str, Any]) -> dict[str, Any]:
    """Several processes (web and workers) share one SQLite file: wait for its lock rather than
    fail, and take it up front so that no transaction has to be retried."""
    if database.get("ENGINE") == "django.db.backends.sqlite3":
        options = {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
        database["OPTIONS"] = options | database.get("OPTIONS", {})
    return database


def databases(project: Settings) -> Any:
    """``default`` from ``DATABASE_URL`` (a platform's), else from ``POSTGRES_HOST`` and its
    siblings (the stack's); other aliases the project defines stay."""
    conn_max_age = env_int("POSTGRES_CONN_MAX_AGE", DEFAULT_CONN_MAX_AGE)
    if env_str("DATABASE_URL"):
        if find_spec("dj_database_url") is None:
            raise ImproperlyConfigured(
                "DATABASE_URL is set, but dj-database-url is not installed (pip install dj-database-url)"
            )
        import dj_database_url

        default = dj_database_url.parse(env_str("DATABASE_URL"), conn_max_age=conn_max_age)
    elif env_str("POSTGRES_HOST"):
        default = {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": env_str("POSTGRES_HOST"),
            "PORT": env_int("POSTGRES_PORT", 5432),
            "NAME": env_str("POSTGRES_DB", "chat"),
            "USER": env_str("POSTGRES_USER", "chat"),
            "PASSWORD": env_secret("POSTGRES_PASSWORD"),
            "CONN_MAX_AGE": conn_max_age,
            "OPTIONS": {"connect_timeout": env_int("POSTGRES_CONNECT_TIMEOUT", 5)},
        }
    else:
        return None
    default["CONN_HEALTH_CHECKS"] = conn_max_age != 0
    return {**project.get("DATABASES", {}), "default": sqlite_options(default)}


def layer_named() -> bool:
    """True when the environment names a channel layer (``CHANNEL_BACKEND`` or a Redis URL)."""
    return bool(env_str("CHANNEL_BACKEND")) or channel_backend() != "memory"


def channel_layers(project: Settings) -> Any:
    """The layer of the deployment (every process alike); ``CHANNELS_ENABLED=false``: none. With
    no layer named in the environment the project's own stays."""
    if not env_bool("CHANNELS_ENABLED", True):
        return {}
    if not layer_named():
        return None
    return channel_layers_from_env()


def static_root(project: Settings) -> Any:
    return env_str("STATIC_ROOT") or None


def installed_apps(project: Settings) -> Any:
    """``channels_kit`` before ``channels``: its ``runworker`` must win (``channels_kit.E001``)."""
    apps = list(project.get("INSTALLED_APPS", []))
    if "channels_kit" in apps:
        if "channels" not in apps or apps.index("channels_kit") < apps.index("channels"):
            return None
        apps.remove("channels_kit")
    apps.insert(apps.index("channels") if "channels" in apps else 0, "channels_kit")
    return apps


def middleware(project: Settings) -> Any:
    """Who answered (``X-Served-By``) first, a 503 while the database is away last, and static
    files served by Django itself (WhiteNoise) unless ``DJANGO_SERVE_STATIC`` says no: the stack's
    nginx serves them, so compose says no; with nothing in front (a platform) they are."""
    stack = list(project.get("MIDDLEWARE", []))
    if SERVED_BY not in stack:
        stack.insert(0, SERVED_BY)
    installed = find_spec("whitenoise") is not None
    if env_bool("DJANGO_SERVE_STATIC", installed) and WHITENOISE not in stack:
        if not installed:
            raise ImproperlyConfigured("DJANGO_SERVE_STATIC=true needs WhiteNoise: pip install whitenoise")
        stack.insert(stack.index(SECURITY) + 1 if SECURITY in stack else 1, WHITENOISE)
    if DATABASE_UNAVAILABLE not in stack:
        stack.append(DATABASE_UNAVAILABLE)
    return stack


def root_urlconf(project: Settings) -> Any:
    """The kit's health views (``/healthz``, ``/readyz``), then the project's URLs."""
    return KIT_URLCONF if project.get("ROOT_URLCONF") else None


def logging_config(project: Settings) -> Any:
    """Everything to stdout, at ``LOG_LEVEL`` (the containers' logs)."""
    level = env_str("LOG_LEVEL", "INFO").upper()
    handler = {"handlers": ["stdout"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "stdout": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"}
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {"django": handler, "daphne": handler},
    }


def default_entry_module(settings_module: str, kind: str) -> str:
    """Where ``startproject`` puts the entry point: ``mysite.settings`` -> ``mysite.asgi``."""
    package = settings_module.rpartition(".")[0]
    return f"{package}.{kind.lower()}" if package else kind.lower()


def entry_point(kind: str) -> Override:
    """``ASGI_APPLICATION`` / ``WSGI_APPLICATION``: ``PROJECT_ASGI_APPLICATION`` (or WSGI) when
    set; else, when the project sets none, the module ``startproject`` writes beside its
    settings (``mysite/asgi.py``) if it is there."""

    def override(project: Settings) -> Any:
        explicit = env_str(f"PROJECT_{kind}_APPLICATION")
        if explicit:
            return explicit
        if project.get(f"{kind}_APPLICATION"):
            return None
        module = default_entry_module(project["KIT_PROJECT_SETTINGS"], kind)
        try:
            found = find_spec(module) is not None
        except ImportError:
            found = False
        return f"{module}.application" if found else None

    return override


def require_entry_point(settings: Any, kind: str) -> str:
    """The project's ``ASGI_APPLICATION`` (or WSGI); ``ImproperlyConfigured`` saying where the
    kit looked and what sets it when there is none."""
    path = getattr(settings, f"{kind}_APPLICATION", None)
    if path:
        return path
    module = getattr(settings, "KIT_PROJECT_SETTINGS", None) or settings.SETTINGS_MODULE
    raise ImproperlyConfigured(
        f"the project has no {kind} application: {module} sets no {kind}_APPLICATION and there is "
        f"no module {default_entry_module(module, kind)}; set {kind}_APPLICATION in the settings "
        f"or PROJECT_{kind}_APPLICATION in the environment (e.g. mysite.{kind.lower()}.application)"
    )


def behind_tls(project: Settings) -> Any:
    return ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("DJANGO_BEHIND_TLS", False) else None


def secure_cookie(project: Settings) -> Any:
    return True if env_bool("DJANGO_BEHIND_TLS", False) else None


# Settings that hold secrets: the record says they changed, never what to.
SECRETS = {"SECRET_KEY"}
DESCRIBE: dict[str, Callable[[Any], str]] = {
    "DATABASES": lambda value: describe_database((value or {}).get("default")),
    "CHANNEL_LAYERS": describe_layers,
}

OVERRIDES: dict[str, Override] = {
    "SECRET_KEY": secret_key,
    "DEBUG": debug,
    "ALLOWED_HOSTS": allowed_hosts,
    "CSRF_TRUSTED_ORIGINS": csrf_trusted_origins,
    "SESSION_COOKIE_DOMAIN": session_cookie_domain,
    "DATABASES": databases,
    "CHANNEL_LAYERS": channel_layers,
    "STATIC_ROOT": static_root,
    "INSTALLED_APPS": installed_apps,
    "MIDDLEWARE": middleware,
    "ROOT_URLCONF": root_urlconf,
    "LOGGING": logging_config,
    "ASGI_APPLICATION": entry_point("ASGI"),
    "WSGI_APPLICATION": entry_point("WSGI"),
    "SECURE_PROXY_SSL_HEADER": behind_tls,
    "SESSION_COOKIE_SECURE": secure_cookie,
    "CSRF_COOKIE_SECURE": secure_cookie,
}


def change(setting: str, before: Any, after: Any, was_set: bool) -> Change:
    """The record of one replaced setting: lists by what was added, secrets by where from."""
    if setting in SECRETS:
        return Change(setting, "the project's" if was_set else "unset", "from the environment")
    if isinstance(before, list | tuple) and isinstance(after, list):
        added = [item for item in after if item not in before]
        if added and len(after) == len(before) + len(added):
            return Change(setting, f"{len(before)} entries", f"added {', '.join(map(str, added))}")
    return Change(setting, shown(setting, before) if was_set else "unset", shown(setting, after))


def shown(setting: str, value: Any) -> str:
    if setting in DESCRIBE:
        return DESCRIBE[setting](value)
    if setting == "LOGGING":
        return "stdout" if value and value.get("root", {}).get("handlers") == ["stdout"] else "project's"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def project_settings(module_name: str) -> Settings:
    """The upper-case names of the project's settings module."""
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"{PROJECT_SETTINGS_VARIABLE}={module_name}: cannot import the project's settings ({exc})"
        ) from exc
    return {name: getattr(module, name) for name in dir(module) if name.isupper()}


def apply(target: dict[str, Any]) -> list[Change]:
    """Fill ``target`` (a settings module's globals) with the project's settings, then the
    kit's overrides; returns what changed."""
    module_name = env_str(PROJECT_SETTINGS_VARIABLE)
    if not module_name:
        raise ImproperlyConfigured(
            f"{PROJECT_SETTINGS_VARIABLE} is not set: name the project's settings module "
            "(e.g. mysite.settings); the kit's images set it from manage.py"
        )
    export_secret_files()  # the project's own settings may read them from os.environ
    project = project_settings(module_name)
    target.update(project)
    target["KIT_PROJECT_SETTINGS"] = module_name
    target["KIT_PROJECT_URLCONF"] = project.get("ROOT_URLCONF")
    if not env_bool(OVERLAY_VARIABLE, True):
        target["KIT_SETTINGS_CHANGES"] = []
        return []
    keep = set(env_list(KEEP_VARIABLE))
    unknown = keep - set(OVERRIDES)
    if unknown:
        raise ImproperlyConfigured(
            f"{KEEP_VARIABLE}: {', '.join(sorted(unknown))} is not a setting the kit replaces; "
            f"choose from {', '.join(OVERRIDES)}"
        )
    changes = []
    current = dict(target)
    for setting, override in OVERRIDES.items():
        if setting in keep:
            continue
        value = override(current)
        if value is None or (setting in current and current[setting] == value):
            continue
        target[setting] = copy.deepcopy(value)
        changes.append(change(setting, current.get(setting), value, setting in current))
    target["KIT_SETTINGS_CHANGES"] = changes
    return changes
