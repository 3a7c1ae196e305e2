"""Settings from environment variables, shared by every process of a deployment.

Interface servers and workers must use the same channel layer settings, or they
cannot talk to each other. Building ``CHANNEL_LAYERS`` here, from the same variables
in every container, keeps them identical. The variables are documented in the kit's
``.env.example``; ``docs/using-the-kit.md`` shows them in a project of your own.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from typing import Any
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from channels_kit.layers.base import ChannelLayer

IN_MEMORY_BACKEND = "channels.layers.InMemoryChannelLayer"
REDIS_BACKEND = "channels_kit.layers.redis.RedisChannelLayer"

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def env_str(name: str, default: str = "") -> str:
    """A string setting; surrounding whitespace is dropped. Empty means unset (the default),
    as for every setting here: compose passes variables that ``.env`` leaves empty."""
    return os.environ.get(name, "").strip() or default


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


def env_int(name: str, default: int) -> int:
    """An integer setting."""
    raw = env_str(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_float(name: str, default: float) -> float:
    """A number setting (seconds, usually)."""
    raw = env_str(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None


def env_list(name: str, default: str = "") -> list[str]:
    """A comma-separated list; empty items are dropped."""
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def redis_urls() -> list[str]:
    """The Redis servers of the channel layer: ``REDIS_URLS`` (several: shards of one layer),
    else a platform's single ``REDIS_TLS_URL`` or ``REDIS_URL``."""
    urls = env_list("REDIS_URLS")
    if urls:
        return urls
    single = env_str("REDIS_TLS_URL") or env_str("REDIS_URL")
    return [single] if single else []


SSL_CERT_REQS = ("none", "optional", "required")


def redis_host(url: str) -> dict[str, Any]:
    """One channels_redis host entry: the URL with the kit's timeouts, ``REDIS_PASSWORD`` when
    the URL carries no credentials of its own (so the URL, which names the shard on the hash
    ring and in logs, holds no secret) and, for ``rediss://``, the certificate settings
    (platforms' managed Redis often has a self-signed one)."""
    host: dict[str, Any] = {
        "address": url,
        "socket_timeout": env_float("REDIS_SOCKET_TIMEOUT", 30.0),
        "socket_connect_timeout": env_float("REDIS_CONNECT_TIMEOUT", 5.0),
        "health_check_interval": env_int("REDIS_HEALTH_CHECK_INTERVAL", 30),
    }
    if env_str("REDIS_PASSWORD") and "@" not in url:
        host["password"] = env_str("REDIS_PASSWORD")
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


def rabbitmq_url() -> str:
    """The RabbitMQ layer's server: ``RABBITMQ_URL`` (a platform's, e.g. ``amqps://...``), else
    one built from ``RABBITMQ_HOST``, ``RABBITMQ_PORT``, ``RABBITMQ_USER``,
    ``RABBITMQ_PASSWORD`` and ``RABBITMQ_VHOST``; empty when neither names a server."""
    url = env_str("RABBITMQ_URL")
    if url:
        return url
    host = env_str("RABBITMQ_HOST")
    if not host:
        return ""
    user = quote(env_str("RABBITMQ_USER", "guest"), safe="")
    password = quote(env_str("RABBITMQ_PASSWORD", "guest"), safe="")
    vhost = quote(env_str("RABBITMQ_VHOST", "/"), safe="")
    return f"amqp://{user}:{password}@{host}:{env_int('RABBITMQ_PORT', 5672)}/{vhost}"


def postgres_layer_url() -> str:
    """The PostgreSQL layer's server: ``POSTGRES_LAYER_URL``, else ``DATABASE_URL`` (the
    project's own database, as a platform gives it), else one built from ``POSTGRES_HOST``,
    ``POSTGRES_PORT``, ``POSTGRES_DB``, ``POSTGRES_USER`` and ``POSTGRES_PASSWORD``; empty
    when none names a server."""
    url = env_str("POSTGRES_LAYER_URL") or env_str("DATABASE_URL")
    if url:
        return url
    host = env_str("POSTGRES_HOST")
    if not host:
        return ""
    user = quote(env_str("POSTGRES_USER", "chat"), safe="")
    password = quote(env_str("POSTGRES_PASSWORD"), safe="")
    database = quote(env_str("POSTGRES_DB", "chat"), safe="")
    return f"postgresql://{user}:{password}@{host}:{env_int('POSTGRES_PORT', 5432)}/{database}"


def require_extra(module: str, extra: str, what: str) -> None:
    """``ImproperlyConfigured`` naming the package extra to install when ``module`` is missing."""
    if find_spec(module) is None:
        raise ImproperlyConfigured(f"{what} is not installed: pip install 'channels-kit[{extra}]'")


def channel_backend() -> str:
    """``CHANNEL_BACKEND``: ``redis``, ``rabbitmq``, ``postgres``, ``local`` (the same-host
    layer) or ``memory``; when unset, ``redis`` if a Redis URL is set, else ``memory``."""
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
    else Channels' in-memory layer."""
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
    return {
        "default": {"BACKEND": REDIS_BACKEND, "CONFIG": common | {"hosts": [redis_host(u) for u in urls]}}
    }


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
