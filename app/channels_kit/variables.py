"""The one list of the environment variables the package reads, with its own defaults, and
the typos of them: a variable set that the package does not read but that is close to one
it does is named in a warning (and by the system check ``channels_kit.W001``).

docs/package-variables.md is ``variables_table()``.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger("channels_kit.conf")


# --- the variables the package reads: the one list ------------------------------------


@dataclass(frozen=True)
class Allowed:
    """The values a number variable may take, checked where it is read (``channels_kit.conf``'s
    ``env_int`` and ``env_float``): always a finite number, within these bounds."""

    minimum: float | None = None
    #: Whether ``minimum`` itself is left out (``> 0`` rather than ``>= 0``).
    above: bool = False
    maximum: float | None = None
    #: What the number counts, for messages: ``seconds`` gives "a number of seconds".
    unit: str = ""
    #: Says what the number is instead ("a port number"), when ``unit`` does not fit.
    noun: str = ""
    #: What a value of the range means besides the obvious: "0: off".
    note: str = ""

    def admits(self, value: float) -> bool:
        """Whether ``value`` is finite and within the bounds."""
        if not math.isfinite(value):
            return False
        if self.minimum is not None and (value <= self.minimum if self.above else value < self.minimum):
            return False
        return self.maximum is None or value <= self.maximum

    def bounds(self) -> str:
        """The bounds alone: ``> 0``, ``>= 1``, ``from 1 to 65535``; empty when none."""
        if self.minimum is not None and self.maximum is not None:
            return f"from {self.minimum:g} to {self.maximum:g}"
        if self.minimum is not None:
            return f"{'>' if self.above else '>='} {self.minimum:g}"
        return f"<= {self.maximum:g}" if self.maximum is not None else ""

    def read(self, name: str, raw: str, whole: bool = False) -> float:
        """``raw``, the value of the variable ``name``, as a number (an ``int`` when ``whole``);
        ``ImproperlyConfigured`` naming the variable, the value and what is allowed when it is
        not one of this range: "CHANNEL_LAYER_EXPIRY must be a whole number of seconds > 0,
        not '0'"."""
        try:
            value = int(raw) if whole else float(raw)
        except ValueError:
            value = math.nan
        if not self.admits(value):
            # Imported here: the docs' table is generated with no Django installed.
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(f"{name} must be {self.describe(whole)}, not {raw!r}")
        return value

    def describe(self, whole: bool = False) -> str:
        """What the value must be: "a whole number of seconds > 0", "a port number from 1 to
        65535 (0: off)"; ``whole`` when it is read as an integer."""
        noun = self.noun or ("a whole number" if whole else "a number") + (
            f" of {self.unit}" if self.unit else ""
        )
        text = " ".join(part for part in (noun, self.bounds()) if part)
        return f"{text} ({self.note})" if self.note else text


#: Ranges the variables below share.
SECONDS = Allowed(0, above=True, unit="seconds")
SECONDS_OR_ZERO = Allowed(0, unit="seconds")
AT_LEAST_ONE = Allowed(1)
PORT_NUMBER = Allowed(1, maximum=65535, noun="a port number")
METRICS_PORT = Allowed(0, maximum=65535, noun="a port number", note="0: off")


@dataclass(frozen=True)
class Variable:
    """An environment variable the package reads, with the package's own default."""

    name: str
    #: What the package uses when the variable is unset or empty (None: nothing).
    default: str | int | float | bool | None
    #: The parts of the package that read it.
    read_by: str
    meaning: str
    #: Said instead of ``default`` when the default is another setting's or computed.
    default_note: str = ""
    #: A number's range (a bad value is refused where it is read); None for other kinds.
    allowed: Allowed | None = None


#: Said of the secrets, which ``channels_kit.conf.env_secret`` reads: NAME, else NAME_FILE's file.
OR_FILE = " (or NAME_FILE: a file holding it, e.g. a secret under /run/secrets)"
SECRET_FILE_SUFFIX = "_FILE"

LAYER = "channel layer"
WORKER = "runworker"
RUNALL = "runall"
RELAY = "relay"
DAPHNE = "interface server"
OVERLAY = "project overlay"

#: Every variable the package reads, with its own default (its images and compose files
#: may set others: `.env.example`). docs/package-variables.md is ``variables_table()``.
VARIABLES: tuple[Variable, ...] = (
    # channel layer (channels_kit.conf, in every process)
    Variable(
        "CHANNEL_BACKEND",
        None,
        LAYER,
        "the layer: redis, rabbitmq, postgres, local or memory",
        "`redis` when a Redis URL is set, else `memory`",
    ),
    Variable("REDIS_URLS", None, LAYER, "the Redis servers, comma-separated (several: shards of one layer)"),
    Variable("REDIS_TLS_URL", None, LAYER, "a platform's Redis over TLS, when REDIS_URLS is unset"),
    Variable("REDIS_URL", None, LAYER, "a platform's Redis, when REDIS_URLS and REDIS_TLS_URL are unset"),
    Variable(
        "REDIS_SENTINELS",
        None,
        LAYER,
        "the Sentinels (host:port, comma-separated) that name the primaries of redis+sentinel:// shards",
    ),
    Variable("REDIS_SENTINEL_USERNAME", None, LAYER, "the ACL user the layer logs in to the Sentinels as"),
    Variable("REDIS_SENTINEL_PASSWORD", None, LAYER, f"the Sentinels' password{OR_FILE}"),
    Variable("REDIS_USERNAME", None, LAYER, "the Redis ACL user of URLs that carry no credentials"),
    Variable("REDIS_PASSWORD", None, LAYER, f"the password of Redis URLs that carry none{OR_FILE}"),
    Variable("REDIS_SOCKET_TIMEOUT", 30.0, LAYER, "seconds a Redis reply may take", allowed=SECONDS),
    Variable(
        "REDIS_COMMAND_TIMEOUT",
        0.5,
        LAYER,
        "seconds a Redis command that does not block may go unanswered before its shard counts as hung",
        allowed=SECONDS,
    ),
    Variable("REDIS_CONNECT_TIMEOUT", 5.0, LAYER, "seconds a Redis connection may take", allowed=SECONDS),
    Variable(
        "REDIS_HEALTH_CHECK_INTERVAL",
        30,
        LAYER,
        "seconds between checks of an idle Redis connection",
        allowed=Allowed(0, unit="seconds", note="0: no checks"),
    ),
    Variable(
        "REDIS_SSL_CERT_REQS", "required", LAYER, "a rediss:// server's certificate: none, optional, required"
    ),
    Variable(
        "REDIS_SSL_CA_CERTS", None, LAYER, "the CA file a rediss:// server's certificate is checked against"
    ),
    Variable("RABBITMQ_URL", None, LAYER, "the RabbitMQ server (amqp:// or amqps://)"),
    Variable("RABBITMQ_HOST", None, LAYER, "the RabbitMQ host, when RABBITMQ_URL is unset"),
    Variable("RABBITMQ_PORT", 5672, LAYER, "its port", allowed=PORT_NUMBER),
    Variable("RABBITMQ_USER", "guest", LAYER, "its user"),
    Variable("RABBITMQ_PASSWORD", "guest", LAYER, f"its password{OR_FILE}"),
    Variable("RABBITMQ_VHOST", "/", LAYER, "its virtual host"),
    Variable(
        "RABBITMQ_HEARTBEAT",
        30,
        LAYER,
        "seconds between AMQP heartbeats",
        allowed=Allowed(0, maximum=65535, unit="seconds", note="0: no heartbeats"),
    ),
    Variable("POSTGRES_LAYER_URL", None, LAYER, f"the PostgreSQL layer's server{OR_FILE}"),
    Variable(
        "DATABASE_URL",
        None,
        f"{LAYER}, {OVERLAY}",
        "the project's database; the PostgreSQL layer's server when POSTGRES_LAYER_URL is unset",
    ),
    Variable("POSTGRES_HOST", None, f"{LAYER}, {OVERLAY}", "the PostgreSQL host, when no URL is set"),
    Variable("POSTGRES_PORT", 5432, f"{LAYER}, {OVERLAY}", "its port", allowed=PORT_NUMBER),
    Variable("POSTGRES_DB", "chat", f"{LAYER}, {OVERLAY}", "its database"),
    Variable("POSTGRES_USER", "chat", f"{LAYER}, {OVERLAY}", "its user"),
    Variable("POSTGRES_PASSWORD", None, f"{LAYER}, {OVERLAY}", f"its password{OR_FILE}"),
    Variable(
        "POSTGRES_CONNECT_TIMEOUT",
        5.0,
        f"{LAYER}, {OVERLAY}",
        "seconds a PostgreSQL connection may take",
        allowed=SECONDS,
    ),
    Variable(
        "LOCAL_LAYER_PATH",
        None,
        LAYER,
        "the same-host layer's SQLite file",
        "`channels-kit-layer.sqlite3` in the temporary directory",
    ),
    Variable("CHANNEL_LAYER_PREFIX", "asgi", LAYER, "the prefix of the layer's keys, queues or rows"),
    Variable(
        "CHANNEL_LAYER_EXPIRY", 60, LAYER, "seconds a message waits before it is dropped", allowed=SECONDS
    ),
    Variable("CHANNEL_LAYER_GROUP_EXPIRY", 86400, LAYER, "seconds a group membership lasts", allowed=SECONDS),
    Variable(
        "CHANNEL_LAYER_CAPACITY",
        100,
        LAYER,
        "messages a channel holds before sends fail",
        allowed=Allowed(1, unit="messages"),
    ),
    Variable(
        "CHANNEL_LAYER_RELAY_CAPACITY",
        1000,
        LAYER,
        "the same for relay mode's channels",
        allowed=Allowed(1, unit="messages"),
    ),
    Variable("ASGI_MODE", "direct", f"{LAYER}, {WORKER}", "direct (Daphne runs the project) or relay"),
    # workers (manage.py runworker; runall's worker)
    Variable("WORKER_ONLY_CHANNELS", None, WORKER, "globs of the only channels to serve"),
    Variable("WORKER_EXCLUDE_CHANNELS", None, WORKER, "globs of channels not to serve"),
    Variable("WORKER_CONCURRENCY", 1, WORKER, "messages in flight per channel", allowed=AT_LEAST_ONE),
    Variable(
        "WORKER_HTTP_CONCURRENCY", 8, WORKER, "relay mode: HTTP requests in flight", allowed=AT_LEAST_ONE
    ),
    Variable(
        "WORKER_WEBSOCKET_CONCURRENCY",
        16,
        WORKER,
        "relay mode: WebSocket events in flight per channel",
        allowed=AT_LEAST_ONE,
    ),
    Variable(
        "WORKER_RELEASE_SECONDS",
        1.0,
        WORKER,
        "relay mode: a request or event running this long (a long-poll) frees its slot",
        allowed=SECONDS,
    ),
    Variable(
        "WORKER_HELD_MAX",
        200,
        WORKER,
        "relay mode: requests and events that freed their slots, at most, per process",
        allowed=Allowed(0, noun="a whole number", note="0: none, each holds its slot"),
    ),
    Variable(
        "WORKER_GRACE_PERIOD_SECONDS",
        25.0,
        f"{WORKER}, {RUNALL}",
        "on SIGTERM, seconds in-flight work gets",
        allowed=SECONDS_OR_ZERO,
    ),
    Variable(
        "WORKER_METRICS_PORT",
        0,
        WORKER,
        "port of the worker's Prometheus /metrics",
        allowed=METRICS_PORT,
    ),
    Variable(
        "WORKER_HEARTBEAT_FILE",
        "/tmp/channels-kit/worker.heartbeat",
        WORKER,
        "file touched while the layer answers the worker",
    ),
    Variable("WORKER_HEARTBEAT_INTERVAL", 5.0, WORKER, "seconds between heartbeats", allowed=SECONDS),
    Variable(
        "WORKER_LAYER_WAIT_SECONDS",
        30.0,
        f"{WORKER}, {RUNALL}",
        "seconds a starting worker waits for its layer to answer before it exits non-zero",
        allowed=SECONDS_OR_ZERO,
    ),
    # one-process mode (manage.py runall)
    Variable("SERVER_BIND", "0.0.0.0", RUNALL, "address to listen on"),
    Variable("PORT", 8000, RUNALL, "port to listen on", allowed=PORT_NUMBER),
    Variable(
        "WEB_REPLICAS",
        1,
        RUNALL,
        "web processes the platform runs (more than 1: no in-memory layer)",
        allowed=AT_LEAST_ONE,
    ),
    Variable("DYNO", None, RUNALL, "a platform's process name (web.2: no in-memory layer)"),
    Variable("DAPHNE_HTTP_TIMEOUT", 120, f"{RUNALL}, {RELAY}", "seconds a request may take", allowed=SECONDS),
    Variable(
        "DAPHNE_WEBSOCKET_CONNECT_TIMEOUT",
        20,
        RUNALL,
        "seconds a WebSocket handshake may take",
        allowed=SECONDS,
    ),
    Variable(
        "WS_MAX_MESSAGE_BYTES", 65536, RUNALL, "largest WebSocket message", allowed=Allowed(1, unit="bytes")
    ),
    Variable(
        "DAPHNE_APPLICATION_CLOSE_TIMEOUT",
        10,
        RUNALL,
        "seconds an application gets to close",
        allowed=SECONDS,
    ),
    Variable("DAPHNE_PING_INTERVAL", 20, RUNALL, "seconds between WebSocket pings", allowed=SECONDS),
    Variable(
        "DAPHNE_PING_TIMEOUT", 30, RUNALL, "seconds without a pong before a WebSocket closes", allowed=SECONDS
    ),
    # Daphne as the kit runs it (channels_kit.interface_server; runall too)
    Variable(
        "DAPHNE_LISTEN_BACKLOG",
        1024,
        f"{DAPHNE}, {RUNALL}",
        "the listening socket's backlog",
        allowed=AT_LEAST_ONE,
    ),
    Variable(
        "DAPHNE_DRAIN_SECONDS",
        10.0,
        f"{DAPHNE}, {RUNALL}",
        "on SIGTERM, seconds over which WebSockets close",
        allowed=Allowed(0, unit="seconds", note="0: no drain"),
    ),
    Variable(
        "WS_MAX_MESSAGES_PER_SECOND",
        50.0,
        f"{DAPHNE}, {RUNALL}",
        "messages a socket may send a second",
        allowed=Allowed(0, note="0: no limit"),
    ),
    Variable(
        "WS_MESSAGE_BURST",
        None,
        f"{DAPHNE}, {RUNALL}",
        "the burst of that limit",
        "the value of `WS_MAX_MESSAGES_PER_SECOND`",
        allowed=Allowed(1, unit="messages"),
    ),
    Variable(
        "DAPHNE_METRICS_PORT",
        0,
        f"{DAPHNE}, {RUNALL}",
        "port of Daphne's Prometheus /metrics",
        allowed=METRICS_PORT,
    ),
    # the relay (channels_kit.relay.asgi)
    Variable(
        "RELAY_TIMEOUT",
        None,
        RELAY,
        "seconds a relayed request may take",
        "the value of `DAPHNE_HTTP_TIMEOUT`",
        allowed=SECONDS,
    ),
    Variable("MAX_REQUEST_BYTES", 1048576, RELAY, "largest request body", allowed=Allowed(1, unit="bytes")),
    Variable("RELAY_HEALTH_PATH", "/healthz", RELAY, "the relay's own health path"),
    Variable(
        "RELAY_MAX_QUEUED_EVENTS",
        100,
        RELAY,
        "events queued per socket before it closes",
        allowed=AT_LEAST_ONE,
    ),
    Variable(
        "RELAY_GROUP_REFRESH_SECONDS",
        60.0,
        RELAY,
        "seconds between group membership refreshes",
        allowed=Allowed(0, unit="seconds", note="0: no renewals"),
    ),
    Variable(
        "RELAY_NO_WORKER_WAIT_SECONDS",
        5.0,
        RELAY,
        "seconds a request waits for a worker",
        allowed=Allowed(unit="seconds", note="negative: no such check"),
    ),
    Variable(
        "RELAY_WORKER_CHECK_SECONDS", 2.0, RELAY, "seconds between looks for live workers", allowed=SECONDS
    ),
    Variable(
        "RELAY_RESEND_SECONDS",
        4.0,
        RELAY,
        "seconds before an unanswered request is sent again",
        allowed=Allowed(unit="seconds", note="0 or negative: never"),
    ),
    Variable(
        "RELAY_ALIVE_SECONDS", 1.0, RELAY, "seconds between the workers' signs of life", allowed=SECONDS
    ),
    Variable(
        "RELAY_RESEND_METHODS",
        "DELETE GET HEAD OPTIONS PUT TRACE",
        RELAY,
        "HTTP methods sent again when their worker died (others: 502)",
    ),
    # every process
    Variable("EVENT_LOOP", "auto", "event loop", "auto, uvloop or asyncio"),
    Variable(
        "ASGI_THREADS",
        None,
        "event loop",
        "threads for sync code",
        "asyncio's default pool",
        allowed=AT_LEAST_ONE,
    ),
    Variable("SERVER_ROLE", None, "identity", "the role in X-Served-By and health answers", "`django`"),
    Variable("LOG_LEVEL", "INFO", f"logging, {OVERLAY}", "level of the kit's own log lines"),
    # the project overlay (channels_kit.project)
    Variable("DJANGO_SETTINGS_MODULE", None, OVERLAY, "the project's settings module", "from manage.py"),
    Variable(
        "PROJECT_REQUIREMENTS", None, OVERLAY, "the project's requirements file", "found in the project"
    ),
    Variable("KIT_PROJECT_SETTINGS", None, OVERLAY, "the project's own settings module, under the overlay"),
    Variable(
        "PROJECT_SETTINGS_OVERLAY", True, OVERLAY, "whether the kit's settings apply over the project's"
    ),
    Variable("PROJECT_SETTINGS_KEEP", None, OVERLAY, "settings the overlay leaves as the project has them"),
    Variable("DJANGO_SECRET_KEY", None, OVERLAY, f"SECRET_KEY{OR_FILE}"),
    Variable("DJANGO_DEBUG", False, OVERLAY, "DEBUG"),
    Variable("DJANGO_ALLOWED_HOSTS", ".localhost,127.0.0.1,[::1]", OVERLAY, "ALLOWED_HOSTS, comma-separated"),
    Variable("DJANGO_CSRF_TRUSTED_ORIGINS", None, OVERLAY, "CSRF_TRUSTED_ORIGINS, comma-separated"),
    Variable("DJANGO_SESSION_COOKIE_DOMAIN", None, OVERLAY, "SESSION_COOKIE_DOMAIN"),
    Variable(
        "POSTGRES_CONN_MAX_AGE",
        60,
        OVERLAY,
        "seconds a database connection is kept",
        allowed=Allowed(0, unit="seconds", note="0: one per request"),
    ),
    Variable("CHANNELS_ENABLED", True, OVERLAY, "whether the overlay sets CHANNEL_LAYERS"),
    Variable("STATIC_ROOT", None, OVERLAY, "where collectstatic puts the static files"),
    Variable(
        "DJANGO_SERVE_STATIC",
        None,
        OVERLAY,
        "whether Django serves the static files (WhiteNoise)",
        "`true` when WhiteNoise is installed",
    ),
    Variable("DJANGO_BEHIND_TLS", False, OVERLAY, "trust X-Forwarded-Proto and mark cookies Secure"),
)


def variable_names() -> frozenset[str]:
    """The names of ``VARIABLES``."""
    return frozenset(variable.name for variable in VARIABLES)


_ALLOWED = {variable.name: variable.allowed for variable in VARIABLES if variable.allowed}


def allowed_for(name: str) -> Allowed | None:
    """The range ``VARIABLES`` gives the number variable ``name``; None for others."""
    return _ALLOWED.get(name)


def shown_default(variable: Variable) -> str:
    """A variable's default as docs/package-variables.md shows it."""
    if variable.default_note:
        return variable.default_note
    if variable.default is None:
        return "(none)"
    if isinstance(variable.default, bool):
        return f"`{str(variable.default).lower()}`"
    if isinstance(variable.default, float) and variable.default.is_integer():
        return f"`{int(variable.default)}`"
    return f"`{variable.default}`"


def shown_allowed(variable: Variable) -> str:
    """A number variable's range as docs/package-variables.md shows it (empty for others)."""
    allowed = variable.allowed
    if allowed is None:
        return ""
    shown = allowed.bounds() or "any"
    return f"{shown} ({allowed.note})" if allowed.note else shown


def variables_table() -> str:
    """The table of docs/package-variables.md, generated from ``VARIABLES``."""
    rows = ["| Variable | Default | Allowed | Read by | What |", "| --- | --- | --- | --- | --- |"]
    rows += [
        f"| `{v.name}` | {shown_default(v)} | {shown_allowed(v)} | {v.read_by} | {v.meaning} |"
        for v in VARIABLES
    ]
    return "\n".join(rows)


# --- typos: a variable set that the package does not read, close to one it does -----

#: How close a name must be to one the package reads to count as its typo (difflib ratio).
LOOKALIKE_CUTOFF = 0.85
#: Variables of the kit's images, compose files and scripts that look like the package's
#: but that the package does not read (tests/package checks every one of .env.example).
READ_ELSEWHERE = frozenset({"HEALTHCHECK_INTERVAL", "PROJECT_SETTINGS", "UWSGI_THREADS"})
_warned: set[str] = set()


def lookalikes(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """``(name set, name meant)`` for each non-empty variable of ``environ`` (the process's)
    that the package does not read but that is close to one it does (a typo)."""
    environ = os.environ if environ is None else environ
    names = variable_names()
    found = []
    for name, value in sorted(environ.items()):
        if name in names or name in READ_ELSEWHERE or not value.strip():
            continue
        if name.endswith(SECRET_FILE_SUFFIX) and name.removesuffix(SECRET_FILE_SUFFIX) in names:
            continue  # a secret's file (env_secret)
        close = difflib.get_close_matches(name.upper(), names, n=1, cutoff=LOOKALIKE_CUTOFF)
        if close:
            found.append((name, close[0]))
    return found


def lookalike_message(name: str, meant: str) -> str:
    """What the log and the system check say of a variable that looks like a typo."""
    return f"{name} is set, but channels_kit reads no variable of that name: did you mean {meant}?"


def warn_about_lookalikes() -> None:
    """Log a warning, once per process and name, for each variable that looks like a typo."""
    for name, meant in lookalikes():
        if name not in _warned:
            _warned.add(name)
            logger.warning(lookalike_message(name, meant))
