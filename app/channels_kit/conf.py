"""Settings from environment variables, shared by every process of a deployment.

Interface servers and workers must use the same channel layer settings, or they
cannot talk to each other. Building ``CHANNEL_LAYERS`` here, from the same variables
in every container, keeps them identical. The variables are documented in the kit's
``.env.example``; ``docs/using-the-kit.md`` shows them in a project of your own.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from channels_kit.layers.base import ChannelLayer
from channels_kit.variables import Allowed, allowed_for, warn_about_lookalikes

logger = logging.getLogger(__name__)

IN_MEMORY_BACKEND = "channels.layers.InMemoryChannelLayer"
REDIS_BACKEND = "channels_kit.layers.redis.RedisChannelLayer"

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def env_str(name: str, default: str = "") -> str:
    """A string setting; surrounding whitespace is dropped. Empty means unset (the default),
    as for every setting here: compose passes variables that ``.env`` leaves empty."""
    return os.environ.get(name, "").strip() or default


def env_secret(name: str) -> str:
    """A secret setting: ``name``, else the content of the file that ``name_FILE`` names (a
    compose, Swarm or Kubernetes secret mounted as a file; surrounding whitespace dropped);
    empty when neither is set. An unreadable file is ``ImproperlyConfigured``."""
    value = env_str(name)
    path = env_str(f"{name}_FILE")
    if value or not path:
        return value
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise ImproperlyConfigured(f"{name}_FILE={path!r}: cannot read it ({error.strerror})") from None


#: The secrets of a deployment that may arrive as files (NAME_FILE): the images' entrypoints
#: and ``export_secret_files()`` read them for code that looks at NAME only.
SECRET_VARIABLES = (
    "DJANGO_SECRET_KEY",
    "POSTGRES_PASSWORD",
    "RABBITMQ_PASSWORD",
    "REDIS_PASSWORD",
    "DEMO_PASSWORD",
    "POSTGRES_LAYER_URL",
)


def export_secret_files() -> None:
    """Each secret of ``SECRET_VARIABLES`` that only its file gives (NAME_FILE), put in this
    process's environment as NAME: a project's own settings read ``os.environ`` (a command
    run with `docker exec`, which skips the image's entrypoint, included)."""
    for name in SECRET_VARIABLES:
        if not env_str(name) and env_str(f"{name}_FILE"):
            os.environ[name] = env_secret(name)


def env_bool(name: str, default: bool = False) -> bool:
    """A yes/no setting (1/0, true/false, yes/no, on/off)."""
    raw = os.environ.get(name, "")
    word = raw.strip().lower()
    if not word:
        return default
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a yes/no value")


def _number_range(name: str, minimum: float | None, maximum: float | None) -> Allowed:
    """The range of the number variable ``name``: its entry of ``VARIABLES`` (the one place
    a variable of the package declares it), narrowed by the caller's bounds if any (a
    project's own variables have only those)."""
    allowed = allowed_for(name) or Allowed()
    if minimum is not None and (allowed.minimum is None or minimum > allowed.minimum):
        allowed = replace(allowed, minimum=minimum, above=False)
    if maximum is not None and (allowed.maximum is None or maximum < allowed.maximum):
        allowed = replace(allowed, maximum=maximum)
    return allowed


def env_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer setting, within the range ``VARIABLES`` gives it (for the package's
    variables) or ``minimum`` and ``maximum`` (others); else ``ImproperlyConfigured``
    naming the variable, the value and what is allowed. The default is not checked."""
    raw = env_str(name)
    if not raw:
        return default
    return int(_number_range(name, minimum, maximum).read(name, raw, whole=True))


def env_float(name: str, default: float, minimum: float | None = None, maximum: float | None = None) -> float:
    """A number setting (seconds, usually): finite, within the range ``VARIABLES`` gives it
    (for the package's variables) or ``minimum`` and ``maximum`` (others); else
    ``ImproperlyConfigured`` as ``env_int``'s. The default is not checked."""
    raw = env_str(name)
    if not raw:
        return default
    return _number_range(name, minimum, maximum).read(name, raw)


def env_list(name: str, default: str = "") -> list[str]:
    """A comma-separated list; empty items are dropped."""
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


# --- layer URLs: parsed and checked, named with their variable in every error ---------

MASKED = "***"


def masked(url: str) -> str:
    """``url`` for messages: its password (``user:secret@``, ``password=`` options, libpq's
    ``password=secret``) shown as ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    at = rest.rfind("@", 0, rest.find("?") if "?" in rest else len(rest))
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = f"{user}:{MASKED}@{rest[at + 1 :]}" if colon else f"{MASKED}@{rest[at + 1 :]}"
    return re.sub(r"(password=)[^&\s]*", rf"\g<1>{MASKED}", f"{scheme}{sep}{rest}", flags=re.I)


def _number(kind: type, minimum: float) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        try:
            number = kind(value)
        except ValueError:
            return "is not an integer" if kind is int else "is not a number"
        if not math.isfinite(number):
            return "is not a finite number"
        return f"is below {minimum:g}" if number < minimum else None

    return check


def _one_of(*words: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value.lower() in words else f"is not one of {', '.join(words)}"

    return check


def _any_text(value: str) -> str | None:
    return None


_yes_no = _one_of(*sorted(TRUE_WORDS | FALSE_WORDS))

# The options a Redis URL of the layer may carry (redis-py reads them from the query).
REDIS_URL_OPTIONS: dict[str, Callable[[str], str | None]] = {
    "db": _number(int, 0),
    "username": _any_text,
    "password": _any_text,
    "client_name": _any_text,
    "socket_timeout": _number(float, 0.001),
    "socket_connect_timeout": _number(float, 0.001),
    "socket_keepalive": _yes_no,
    "socket_read_size": _number(int, 1),
    "retry_on_timeout": _yes_no,
    "health_check_interval": _number(int, 0),
    "max_connections": _number(int, 1),
    "timeout": _number(float, 0),
    "protocol": _one_of("2", "3"),
}
# ... and a rediss:// URL's TLS options.
REDIS_TLS_OPTIONS: dict[str, Callable[[str], str | None]] = {
    "ssl_cert_reqs": _one_of("none", "optional", "required"),
    "ssl_ca_certs": _any_text,
    "ssl_ca_path": _any_text,
    "ssl_certfile": _any_text,
    "ssl_keyfile": _any_text,
    "ssl_check_hostname": _yes_no,
    "ssl_ciphers": _any_text,
    "ssl_min_version": _number(int, 0),
}
REDIS_FORMS = (
    "redis://[[user]:password@]host[:port][/db], rediss://[[user]:password@]host[:port][/db] "
    "(TLS), unix://[[user]:password@]/path/to/redis.sock[?db=N], with redis-py's options "
    "after a '?', or redis+sentinel://[[user]:password@]master-name[/db] (a replicated shard "
    "whose primary the Sentinels of REDIS_SENTINELS name)"
)
SENTINEL_SCHEME = "redis+sentinel"
SENTINELS_FORM = "host:port of each Sentinel, comma-separated (e.g. sentinel-1:26379,sentinel-2:26379)"
AMQP_FORMS = "amqp://user:password@host[:port][/vhost] or amqps://user:password@host[:port][/vhost] (TLS)"
POSTGRES_FORMS = (
    "postgresql://[user[:password]@][host][:port][/dbname][?options] (or postgres://...), "
    "or libpq's key=value form (host=... dbname=...)"
)


def _authority_problem(url: str, schemes: tuple[str, ...], need_host: bool = True) -> str | None:
    """What is wrong with the scheme, host or port of ``url``, or None."""
    if "://" not in url:
        return "it has no scheme"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "its host or port does not parse (a port is a number from 1 to 65535)"
    if parts.scheme.lower() not in schemes:
        return f"its scheme {parts.scheme!r} is not one of {', '.join(schemes)}"
    if need_host and not parts.hostname:
        return "it names no host"
    if port == 0:
        return "its port is 0 (a port is a number from 1 to 65535)"
    return None


def redis_url_problem(url: str) -> str | None:
    """What is wrong with one Redis URL of the layer (``REDIS_FORMS``), or None."""
    scheme = url.partition("://")[0].lower()
    schemes = ("redis", "rediss", "unix", SENTINEL_SCHEME)
    problem = _authority_problem(url, schemes, need_host=scheme != "unix")
    if problem:
        if problem == "it has no scheme" and re.fullmatch(r"[\w.-]+(:\d+)?(/\d+)?", url):
            problem += f" (redis://{url}?)"
        elif "sentinel" in scheme:
            problem += f" (a replicated shard: {SENTINEL_SCHEME}://[[user]:password@]master-name[/db])"
        return problem
    parts = urlsplit(url)
    if scheme == SENTINEL_SCHEME:
        if parts.port is not None:
            return "it names a port: a Sentinel shard names its master, the Sentinels go in REDIS_SENTINELS"
        if parts.query:
            return "it has options: a Sentinel shard takes none (the REDIS_* variables set them)"
    if scheme == "unix" and not parts.path.strip("/"):
        return "it names no socket path"
    database = parts.path.strip("/")
    if scheme != "unix" and database and not database.isdigit():
        return f"its database {database!r} is not a number"
    allowed = REDIS_URL_OPTIONS | (REDIS_TLS_OPTIONS if scheme == "rediss" else {})
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in allowed:
            if key in REDIS_TLS_OPTIONS:
                return f"option {key} is a TLS option, for a rediss:// URL only"
            return f"option {key!r} is not one the layer takes ({', '.join(sorted(allowed))})"
        wrong = allowed[key](value)
        if wrong:
            return f"option {key}={'***' if key == 'password' else value!r} {wrong}"
    return None


def checked_url(variable: str, url: str, problem: str | None, forms: str, item: str = "") -> str:
    """``url``, or ``ImproperlyConfigured`` naming ``variable``, the masked value, the
    problem and the ``forms`` allowed."""
    if problem is None:
        return url
    named = f"{variable} {item}, {masked(url)!r}" if item else f"{variable}={masked(url)!r}"
    raise ImproperlyConfigured(f"{named}: {problem}. Expected {forms}")


def redis_urls_from_env() -> tuple[str, list[str]]:
    """The variable that names the layer's Redis servers and its URLs, each checked:
    ``REDIS_URLS`` (several: shards of one layer), else a platform's single
    ``REDIS_TLS_URL`` or ``REDIS_URL``; ``("", [])`` when none is set."""
    urls = env_list("REDIS_URLS")
    if urls:
        for number, url in enumerate(urls, 1):
            item = f"item {number} of {len(urls)}" if len(urls) > 1 else ""
            checked_url("REDIS_URLS", url, redis_url_problem(url), REDIS_FORMS, item)
            if urls.index(url) != number - 1:
                raise ImproperlyConfigured(f"REDIS_URLS names {masked(url)!r} twice: each shard once")
        return "REDIS_URLS", urls
    for variable, url in (("REDIS_TLS_URL", env_str("REDIS_TLS_URL")), ("REDIS_URL", env_str("REDIS_URL"))):
        if url:
            return variable, [checked_url(variable, url, redis_url_problem(url), REDIS_FORMS)]
    return "", []


def redis_urls() -> list[str]:
    """The Redis servers of the channel layer (``redis_urls_from_env()``), checked."""
    return redis_urls_from_env()[1]


def redis_sentinels() -> list[tuple[str, int]]:
    """``REDIS_SENTINELS`` as (host, port) pairs, checked; empty when unset."""
    sentinels = []
    for item in env_list("REDIS_SENTINELS"):
        host, _, port = item.rpartition(":")
        if not host or "/" in item or "@" in item or not port.isdigit() or not 0 < int(port) < 65536:
            raise ImproperlyConfigured(f"REDIS_SENTINELS item {masked(item)!r}: expected {SENTINELS_FORM}")
        sentinels.append((host.strip("[]"), int(port)))
    return sentinels


SSL_CERT_REQS = ("none", "optional", "required")


def redis_host(url: str) -> dict[str, Any]:
    """One channels_redis host entry: the URL with the kit's timeouts, ``REDIS_USERNAME`` and
    ``REDIS_PASSWORD`` (or ``REDIS_PASSWORD_FILE``) when the URL carries no credentials of its
    own (so the URL, which names the shard on the hash ring and in logs, holds no secret) and,
    for ``rediss://``, the certificate settings (platforms' managed Redis often has a
    self-signed one)."""
    host: dict[str, Any] = {
        "address": url,
        "socket_timeout": env_float("REDIS_SOCKET_TIMEOUT", 30.0),
        "socket_connect_timeout": env_float("REDIS_CONNECT_TIMEOUT", 5.0),
        "health_check_interval": env_int("REDIS_HEALTH_CHECK_INTERVAL", 30),
    }
    if "@" not in url:
        if env_str("REDIS_USERNAME"):
            host["username"] = env_str("REDIS_USERNAME")
        if env_secret("REDIS_PASSWORD"):
            host["password"] = env_secret("REDIS_PASSWORD")
    if url.lower().startswith(f"{SENTINEL_SCHEME}://"):
        host["sentinels"] = redis_sentinels()
        if not host["sentinels"]:
            raise ImproperlyConfigured(
                f"REDIS_URLS names the Sentinel shard {masked(url)!r} but REDIS_SENTINELS is empty: "
                f"expected {SENTINELS_FORM}"
            )
        # How the layer logs in to the Sentinels (their own password, or none).
        host["sentinel_kwargs"] = {
            key: value
            for key, value in (
                ("username", env_str("REDIS_SENTINEL_USERNAME")),
                ("password", env_secret("REDIS_SENTINEL_PASSWORD")),
            )
            if value
        }
    if url.startswith("rediss://"):
        cert_reqs = env_str("REDIS_SSL_CERT_REQS", "required").lower()
        if cert_reqs not in SSL_CERT_REQS:
            raise ImproperlyConfigured(
                f"REDIS_SSL_CERT_REQS={cert_reqs!r}: expected one of {', '.join(SSL_CERT_REQS)}"
            )
        host["ssl_cert_reqs"] = cert_reqs
        if env_str("REDIS_SSL_CA_CERTS"):
            host["ssl_ca_certs"] = env_str("REDIS_SSL_CA_CERTS")
    return host


CHANNEL_BACKENDS = ("redis", "rabbitmq", "postgres", "local", "memory")
LOCAL_BACKEND = "channels_kit.layers.local.LocalChannelLayer"
RABBITMQ_BACKEND = "channels_kit.layers.rabbitmq.RabbitMQChannelLayer"
POSTGRES_BACKEND = "channels_kit.layers.postgres.PostgresChannelLayer"


def host_name(variable: str) -> str:
    """A host name setting: ``ImproperlyConfigured`` when it holds a URL or a port."""
    host = env_str(variable)
    if "://" in host or "@" in host or "/" in host:
        raise ImproperlyConfigured(
            f"{variable}={masked(host)!r}: expected a host name or address alone (the port, user "
            "and password have variables of their own; a whole URL goes in the backend's *_URL)"
        )
    return host


def rabbitmq_url() -> str:
    """The RabbitMQ layer's server: ``RABBITMQ_URL`` (a platform's, e.g. ``amqps://...``), else
    one built from ``RABBITMQ_HOST``, ``RABBITMQ_PORT``, ``RABBITMQ_USER``,
    ``RABBITMQ_PASSWORD`` and ``RABBITMQ_VHOST``; empty when neither names a server."""
    url = env_str("RABBITMQ_URL")
    if url:
        return checked_url("RABBITMQ_URL", url, _authority_problem(url, ("amqp", "amqps")), AMQP_FORMS)
    host = host_name("RABBITMQ_HOST")
    if not host:
        return ""
    user = quote(env_str("RABBITMQ_USER", "guest"), safe="")
    password = quote(env_secret("RABBITMQ_PASSWORD") or "guest", safe="")
    vhost = quote(env_str("RABBITMQ_VHOST", "/"), safe="")
    port = env_int("RABBITMQ_PORT", 5672)
    return f"amqp://{user}:{password}@{host}:{port}/{vhost}"


def postgres_url_problem(url: str) -> str | None:
    """What is wrong with the PostgreSQL layer's server (``POSTGRES_FORMS``), or None."""
    if "://" not in url and "=" in url:
        return None  # libpq's key=value form: psycopg checks it
    # An empty host is libpq's local socket.
    return _authority_problem(url, ("postgresql", "postgres"), need_host=False)


def postgres_layer_url() -> str:
    """The PostgreSQL layer's server: ``POSTGRES_LAYER_URL``, else ``DATABASE_URL`` (the
    project's own database, as a platform gives it), else one built from ``POSTGRES_HOST``,
    ``POSTGRES_PORT``, ``POSTGRES_DB``, ``POSTGRES_USER`` and ``POSTGRES_PASSWORD``; empty
    when none names a server."""
    for variable, url in (
        ("POSTGRES_LAYER_URL", env_secret("POSTGRES_LAYER_URL")),
        ("DATABASE_URL", env_str("DATABASE_URL")),
    ):
        if url:
            forms = POSTGRES_FORMS
            if variable == "DATABASE_URL":
                forms += " (or name the layer's own server in POSTGRES_LAYER_URL)"
            return checked_url(variable, url, postgres_url_problem(url), forms)
    host = host_name("POSTGRES_HOST")
    if not host:
        return ""
    user = quote(env_str("POSTGRES_USER", "chat"), safe="")
    password = quote(env_secret("POSTGRES_PASSWORD"), safe="")
    database = quote(env_str("POSTGRES_DB", "chat"), safe="")
    port = env_int("POSTGRES_PORT", 5432)
    return f"postgresql://{user}:{password}@{host}:{port}/{database}"


def install_hint(extra: str) -> str:
    """How to install one of the package's extras: the package is installed from the kit's
    checkout, not from a package index."""
    return (
        f"install the kit's '{extra}' extra (pip install './app[{extra}]' from the root of the "
        "kit's checkout)"
    )


def require_extra(module: str, extra: str, what: str) -> None:
    """``ImproperlyConfigured`` naming the package extra to install when ``module`` is missing."""
    if find_spec(module) is None:
        raise ImproperlyConfigured(f"{what} is not installed: {install_hint(extra)}")


def channel_backend() -> str:
    """``CHANNEL_BACKEND``: ``redis``, ``rabbitmq``, ``postgres``, ``local`` (the same-host
    layer) or ``memory``; when unset, ``redis`` if a Redis URL is set, else ``memory``."""
    warn_about_lookalikes()
    backend = env_str("CHANNEL_BACKEND").lower() or ("redis" if redis_urls() else "memory")
    if backend not in CHANNEL_BACKENDS:
        raise ImproperlyConfigured(
            f"CHANNEL_BACKEND={backend!r}: expected one of {', '.join(CHANNEL_BACKENDS)}"
        )
    return backend


def channel_layers_from_env() -> dict[str, Any]:
    """``CHANNEL_LAYERS`` for ``CHANNEL_BACKEND``, from the same variables in every process:
    Redis from ``REDIS_URLS`` (or ``REDIS_URL``), RabbitMQ from ``rabbitmq_url()``,
    PostgreSQL from ``postgres_layer_url()``, the same-host layer from ``LOCAL_LAYER_PATH``,
    else Channels' in-memory layer.

    The whole ``CHANNEL_LAYERS`` setting (plural: a dict of aliases, ``default`` only),
    read from the environment; ``channel_layer_from_env()`` builds one layer instance."""
    backend = channel_backend()
    if backend == "memory":
        return {"default": {"BACKEND": IN_MEMORY_BACKEND}}
    common = {
        "prefix": env_str("CHANNEL_LAYER_PREFIX", "asgi"),
        "expiry": env_int("CHANNEL_LAYER_EXPIRY", 60),
        "group_expiry": env_int("CHANNEL_LAYER_GROUP_EXPIRY", 86400),
        "capacity": env_int("CHANNEL_LAYER_CAPACITY", 100),
        # Relay mode's channels (channels_kit.relay): the work channels that carry every
        # request and WebSocket event to the workers, and each interface server's replies.
        "channel_capacity": {
            pattern: env_int("CHANNEL_LAYER_RELAY_CAPACITY", 1000)
            for pattern in ("relay.*", "http.request", "websocket.*")
        },
    }
    if backend == "local":
        local = {"path": env_str("LOCAL_LAYER_PATH") or None}
        return {"default": {"BACKEND": LOCAL_BACKEND, "CONFIG": common | local}}
    if backend == "rabbitmq":
        url = rabbitmq_url()
        if not url:
            raise ImproperlyConfigured("CHANNEL_BACKEND=rabbitmq needs RABBITMQ_URL or RABBITMQ_HOST")
        require_extra("aiormq", "rabbitmq", "CHANNEL_BACKEND=rabbitmq, but the RabbitMQ backend")
        amqp = {"url": url, "heartbeat": env_int("RABBITMQ_HEARTBEAT", 30)}
        return {"default": {"BACKEND": RABBITMQ_BACKEND, "CONFIG": common | amqp}}
    if backend == "postgres":
        url = postgres_layer_url()
        if not url:
            raise ImproperlyConfigured(
                "CHANNEL_BACKEND=postgres needs POSTGRES_LAYER_URL, DATABASE_URL or POSTGRES_HOST"
            )
        require_extra("psycopg", "postgres", "CHANNEL_BACKEND=postgres, but the PostgreSQL backend")
        server = {"url": url, "connect_timeout": env_float("POSTGRES_CONNECT_TIMEOUT", 5.0)}
        return {"default": {"BACKEND": POSTGRES_BACKEND, "CONFIG": common | server}}
    urls = redis_urls()
    if not urls:
        raise ImproperlyConfigured("CHANNEL_BACKEND=redis needs REDIS_URLS (or a platform's REDIS_URL)")
    require_extra("channels_redis", "redis", "a Redis URL is set, but the Redis backend")
    redis_config = {
        "hosts": [redis_host(u) for u in urls],
        "command_timeout": env_float("REDIS_COMMAND_TIMEOUT", 0.5),
    }
    return {"default": {"BACKEND": REDIS_BACKEND, "CONFIG": common | redis_config}}


def channel_layer_from_env() -> ChannelLayer:
    """The default channel layer of ``channel_layers_from_env()``, built without Django settings
    (the relay's interface servers run no Django project)."""
    config = channel_layers_from_env()["default"]
    return import_string(config["BACKEND"])(**config.get("CONFIG", {}))


ASGI_MODES = ("direct", "relay")


def asgi_mode() -> str:
    """``ASGI_MODE``: ``direct`` (Daphne runs the project) or ``relay`` (workers run it)."""
    mode = env_str("ASGI_MODE", "direct").lower() or "direct"
    if mode not in ASGI_MODES:
        raise ImproperlyConfigured(f"ASGI_MODE={mode!r}: expected one of {', '.join(ASGI_MODES)}")
    return mode


# --- the servers of a layer, for messages ---------------------------------------------


def layer_servers(layer: object) -> list[str]:
    """The servers (or file) a channel layer talks to, passwords masked: channels_redis's
    ``hosts``, the RabbitMQ and PostgreSQL layers' ``url``, the same-host layer's ``path``;
    empty for a layer of no server (in-memory)."""
    hosts = getattr(layer, "hosts", None)
    if isinstance(hosts, list | tuple):
        servers = []
        for host in hosts:
            if not isinstance(host, Mapping):
                servers.append(masked(str(host)))
            elif "address" in host:
                servers.append(masked(str(host["address"])))
            elif "master_name" in host:
                servers.append(f"sentinel:{host['master_name']}")
            else:
                servers.append(f"{host.get('host', 'localhost')}:{host.get('port', 6379)}")
        return servers
    for attribute in ("url", "path"):
        value = getattr(layer, attribute, None)
        if value:
            return [masked(str(value))]
    return []
