"""Number settings checked at start (issue #27, point 8): every number variable of the package
declares its range in ``channels_kit.variables.VARIABLES``, and a value outside it (0 where
0 makes no sense, a negative interval, ``nan``, ``inf``) is refused where it is read, with
an error naming the variable, its value and what is allowed. The constructors that take
such values directly (``RelaySettings``, ``KitWorker``) refuse them too."""

from __future__ import annotations

import ast
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from channels.layers import InMemoryChannelLayer
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError

import channels_kit
from channels_kit import conf, variables
from channels_kit.management.commands import runall, runworker
from channels_kit.relay.protocol import alive_every
from channels_kit.relay.settings import RelaySettings
from channels_kit.worker.server import KitWorker

PACKAGE = Path(channels_kit.__file__).parent
RANGED = [variable for variable in variables.VARIABLES if variable.allowed]
# Position of the variable's name in the calls that read a number.
NUMBER_READERS = {"env_int": 0, "env_float": 0, "option_or_env": 1, "allowed_for": 0}


def number_reads() -> set[str]:
    """The variables the package's modules read as numbers (parsed, not imported)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            function = getattr(node.func, "id", getattr(node.func, "attr", ""))
            at = NUMBER_READERS.get(function)
            if at is not None and len(node.args) > at and isinstance(node.args[at], ast.Constant):
                names.add(node.args[at].value)
    return {name for name in names if isinstance(name, str) and name.isupper()}


def test_every_number_the_package_reads_declares_its_range():
    listed = {variable.name: variable for variable in variables.VARIABLES}
    read = number_reads()
    assert {"CHANNEL_LAYER_EXPIRY", "REDIS_SOCKET_TIMEOUT", "RELAY_ALIVE_SECONDS", "ASGI_THREADS"} <= read
    unranged = sorted(name for name in read if name in listed and listed[name].allowed is None)
    assert not unranged, f"give these an allowed= range in channels_kit.variables.VARIABLES: {unranged}"
    numeric_defaults = [
        v.name
        for v in variables.VARIABLES
        if isinstance(v.default, int | float) and not isinstance(v.default, bool) and v.allowed is None
    ]
    assert not numeric_defaults, numeric_defaults


def test_every_default_is_within_its_range():
    for variable in RANGED:
        if isinstance(variable.default, int | float):
            assert variable.allowed.admits(variable.default), variable.name


def bad_values(allowed: variables.Allowed) -> list[str]:
    """Values outside ``allowed``: not numbers, not finite, just past each bound."""
    values = ["nan", "inf", "-inf", "soon"]
    if allowed.minimum is not None:
        values.append(f"{allowed.minimum:g}" if allowed.above else f"{allowed.minimum - 1:g}")
    if allowed.maximum is not None:
        values.append(f"{allowed.maximum + 1:g}")
    return values


@pytest.mark.parametrize("variable", RANGED, ids=lambda v: v.name)
def test_a_value_outside_the_range_is_refused_naming_variable_value_and_range(monkeypatch, variable):
    whole = isinstance(variable.default, int)
    read = conf.env_int if whole else conf.env_float
    for value in bad_values(variable.allowed):
        monkeypatch.setenv(variable.name, value)
        with pytest.raises(ImproperlyConfigured) as raised:
            read(variable.name, 1)
        expected = f"{variable.name} must be {variable.allowed.describe(whole)}, not {value!r}"
        assert str(raised.value) == expected
    if variable.default is not None:
        monkeypatch.setenv(variable.name, str(variable.default))
        assert read(variable.name, 1) == variable.default


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CHANNEL_LAYER_EXPIRY", "0", "CHANNEL_LAYER_EXPIRY must be a whole number of seconds > 0, not '0'"),
        (
            "CHANNEL_LAYER_EXPIRY",
            "1.5",
            "CHANNEL_LAYER_EXPIRY must be a whole number of seconds > 0, not '1.5'",
        ),
        ("REDIS_SOCKET_TIMEOUT", "0", "REDIS_SOCKET_TIMEOUT must be a number of seconds > 0, not '0'"),
        ("REDIS_SOCKET_TIMEOUT", "nan", "REDIS_SOCKET_TIMEOUT must be a number of seconds > 0, not 'nan'"),
        ("REDIS_CONNECT_TIMEOUT", "inf", "REDIS_CONNECT_TIMEOUT must be a number of seconds > 0, not 'inf'"),
        ("CHANNEL_LAYER_GROUP_EXPIRY", "-1", "must be a whole number of seconds > 0, not '-1'"),
        ("CHANNEL_LAYER_RELAY_CAPACITY", "0", "must be a whole number of messages >= 1, not '0'"),
        (
            "REDIS_HEALTH_CHECK_INTERVAL",
            "-5",
            "must be a whole number of seconds >= 0 (0: no checks), not '-5'",
        ),
    ],
)
def test_the_redis_layer_settings_are_checked_when_the_layer_is_configured(monkeypatch, name, value, message):
    monkeypatch.delenv("CHANNEL_BACKEND", raising=False)
    monkeypatch.setenv("REDIS_URLS", "redis://redis:6379/0")
    monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured) as raised:
        conf.channel_layers_from_env()
    assert message in str(raised.value)


def test_the_postgres_and_rabbitmq_numbers_are_checked(monkeypatch):
    monkeypatch.setenv("CHANNEL_BACKEND", "postgres")
    monkeypatch.setenv("POSTGRES_LAYER_URL", "postgresql://u:p@db/chat")
    monkeypatch.setenv("POSTGRES_CONNECT_TIMEOUT", "0")
    with pytest.raises(
        ImproperlyConfigured, match="POSTGRES_CONNECT_TIMEOUT must be a number of seconds > 0"
    ):
        conf.channel_layers_from_env()
    monkeypatch.setenv("CHANNEL_BACKEND", "rabbitmq")
    monkeypatch.setenv("RABBITMQ_URL", "amqp://u:p@broker/")
    monkeypatch.setenv("RABBITMQ_HEARTBEAT", "70000")
    with pytest.raises(ImproperlyConfigured, match=r"RABBITMQ_HEARTBEAT must be .* from 0 to 65535"):
        conf.channel_layers_from_env()


def test_a_redis_url_option_that_is_not_finite_is_refused(monkeypatch):
    monkeypatch.delenv("CHANNEL_BACKEND", raising=False)
    monkeypatch.setenv("REDIS_URLS", "redis://redis:6379/0?socket_timeout=nan")
    with pytest.raises(ImproperlyConfigured, match="option socket_timeout='nan' is not a finite number"):
        conf.channel_layers_from_env()


def test_a_projects_own_numbers_get_the_callers_bounds_and_must_be_finite(monkeypatch):
    monkeypatch.setenv("X_COUNT", "0")
    with pytest.raises(ImproperlyConfigured, match=r"^X_COUNT must be a whole number >= 1, not '0'$"):
        conf.env_int("X_COUNT", 5, minimum=1)
    monkeypatch.setenv("X_SECONDS", "nan")
    with pytest.raises(ImproperlyConfigured, match=r"^X_SECONDS must be a number, not 'nan'$"):
        conf.env_float("X_SECONDS", 1.0)
    monkeypatch.setenv("X_SECONDS", "2.5")
    assert conf.env_float("X_SECONDS", 1.0, minimum=0, maximum=3) == 2.5
    # A caller's bounds narrow the range of a variable of the package, never widen it.
    monkeypatch.setenv("CHANNEL_LAYER_EXPIRY", "5")
    with pytest.raises(
        ImproperlyConfigured, match="CHANNEL_LAYER_EXPIRY must be a whole number of seconds >= 10"
    ):
        conf.env_int("CHANNEL_LAYER_EXPIRY", 60, minimum=10)
    monkeypatch.setenv("CHANNEL_LAYER_EXPIRY", "0")
    with pytest.raises(ImproperlyConfigured, match="> 0, not '0'"):
        conf.env_int("CHANNEL_LAYER_EXPIRY", 60, minimum=-5)


def test_unset_or_empty_is_the_default_unchecked(monkeypatch):
    monkeypatch.setenv("RELAY_ALIVE_SECONDS", " ")
    assert conf.env_float("RELAY_ALIVE_SECONDS", 1.0) == 1.0
    monkeypatch.delenv("WS_MESSAGE_BURST", raising=False)
    assert conf.env_float("WS_MESSAGE_BURST", 0.5) == 0.5  # computed from another setting


def test_the_documented_special_values_still_pass(monkeypatch):
    for name, value in [
        ("RELAY_NO_WORKER_WAIT_SECONDS", "-1"),
        ("RELAY_RESEND_SECONDS", "-1"),
        ("RELAY_RESEND_SECONDS", "0"),
        ("WORKER_METRICS_PORT", "0"),
        ("DAPHNE_METRICS_PORT", "0"),
        ("WS_MAX_MESSAGES_PER_SECOND", "0"),
        ("DAPHNE_DRAIN_SECONDS", "0"),
        ("WORKER_GRACE_PERIOD_SECONDS", "0"),
    ]:
        monkeypatch.setenv(name, value)
        assert conf.env_float(name, 1.0) == float(value)


# --- the processes that read them ----------------------------------------------------


def worker_options(**given) -> dict:
    options = dict.fromkeys(
        (
            "only_channels",
            "exclude_channels",
            "concurrency",
            "http_concurrency",
            "websocket_concurrency",
            "grace_period",
            "metrics_port",
        )
    )
    return options | {"relay": False} | given


@pytest.mark.parametrize(
    ("env", "given", "message"),
    [
        ({"WORKER_CONCURRENCY": "0"}, {}, "WORKER_CONCURRENCY must be a whole number >= 1, not '0'"),
        ({}, {"concurrency": 0}, "--concurrency must be a whole number >= 1, not 0"),
        ({}, {"http_concurrency": -2}, "--http-concurrency must be a whole number >= 1, not -2"),
        ({}, {"grace_period": math.nan}, "--grace-period must be a number of seconds >= 0, not nan"),
        ({}, {"metrics_port": 70000}, "--metrics-port must be a port number from 0 to 65535 (0: off)"),
        ({"WORKER_HEARTBEAT_INTERVAL": "0"}, {}, "WORKER_HEARTBEAT_INTERVAL must be a number of seconds > 0"),
        (
            {"WORKER_LAYER_WAIT_SECONDS": "-1"},
            {},
            "WORKER_LAYER_WAIT_SECONDS must be a number of seconds >= 0",
        ),
    ],
)
def test_runworker_refuses_a_bad_number_before_it_starts(monkeypatch, env, given, message):
    for name in ("WORKER_CONCURRENCY", "WORKER_HEARTBEAT_INTERVAL", "WORKER_LAYER_WAIT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(CommandError) as raised:
        runworker.read_options(worker_options(**given))
    assert message in str(raised.value)


def test_runall_refuses_a_bad_port_or_timeout(monkeypatch):
    with pytest.raises(CommandError, match="--port must be a port number from 1 to 65535, not 0"):
        runall.Command._from_env({"bind": None, "port": 0})
    monkeypatch.setenv("DAPHNE_PING_INTERVAL", "0")
    with pytest.raises(CommandError, match="DAPHNE_PING_INTERVAL must be a whole number of seconds > 0"):
        runall.Command._from_env({"bind": None, "port": None})


@pytest.mark.parametrize(
    "settings",
    [
        {"timeout": 0},
        {"timeout": math.nan},
        {"alive_every": -1.0},
        {"alive_every": 0},
        {"worker_check": math.inf},
        {"group_refresh": -1},
        {"max_body": 0},
        {"max_queued_events": 0},
        {"no_worker_wait": -1.0},
        {"resend_after": 0},
    ],
)
def test_relay_settings_refuse_what_the_relay_cannot_work_with(settings):
    [(name, value)] = settings.items()
    with pytest.raises(ValueError, match=rf"^{name} must be .*, not {value!r}$"):
        RelaySettings(identity="daphne/test", **settings)


def test_relay_settings_keep_their_off_values():
    settings = RelaySettings(identity="daphne/test", no_worker_wait=None, resend_after=None, group_refresh=0)
    assert (settings.no_worker_wait, settings.resend_after, settings.group_refresh) == (None, None, 0)


@pytest.mark.parametrize(
    ("relay", "expected"),
    [
        ({"alive_every": 0.5}, 0.5),
        ({"alive_every": 2}, 2.0),
        ({}, None),
        ({"alive_every": None}, None),
        ({"alive_every": 0}, None),
        ({"alive_every": -1.0}, None),
        ({"alive_every": math.nan}, None),
        ({"alive_every": "1"}, None),
        ({"alive_every": True}, None),
    ],
)
def test_a_worker_beats_only_at_a_usable_interval(relay, expected):
    """A bad ``alive_every`` in an envelope (a foreign or misconfigured interface) means no
    beats, not beats without pause."""
    assert alive_every(relay) == expected


async def _app(scope, receive, send):  # pragma: no cover - never run
    pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency of jobs must be at least 1"),
        ({"grace_period": -1.0}, "grace_period must not be negative"),
        ({"grace_period": math.nan}, "grace_period must not be negative"),
        ({"layer_wait": math.inf}, "layer_wait must not be negative"),
        ({"heartbeat_interval": 0}, "heartbeat_interval must be above 0"),
        ({"heartbeat_interval": -1.0}, "heartbeat_interval must be above 0"),
    ],
)
def test_kit_worker_refuses_bad_numbers(options, message):
    with pytest.raises(ValueError, match=message):
        KitWorker(application=_app, channels=["jobs"], channel_layer=InMemoryChannelLayer(), **options)


def test_a_hand_written_redis_host_without_a_scheme_fails_when_the_layer_is_built():
    pytest.importorskip("channels_redis")
    from channels_kit.layers.redis import RedisChannelLayer

    with pytest.raises(ImproperlyConfigured, match=r"channel layer host 'localhost:6379': .*scheme"):
        RedisChannelLayer(hosts=["localhost:6379"])
    with pytest.raises(ImproperlyConfigured, match=r"'redis://\*\*\*@redis:x/0'"):
        RedisChannelLayer(hosts=[{"address": "redis://:s3cret@redis:x/0"}])
    RedisChannelLayer(hosts=["redis://redis:6379/0", ("redis", 6379), "unix:///run/redis.sock?db=1"])


def start_relay(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Import the relay's ASGI module (what Daphne does at start) in a process of its own."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "RELAY_", "CHANNEL_"))}
    environ |= {"CHANNEL_BACKEND": "local", "LOCAL_LAYER_PATH": str(tmp_path / "layer.sqlite3")} | env
    environ.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-c", "import channels_kit.relay.asgi"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_relay_does_not_start_on_a_bad_number_or_a_scheme_less_redis_url(tmp_path):
    started = start_relay(tmp_path)
    assert started.returncode == 0, started.stderr
    started = start_relay(tmp_path, RELAY_ALIVE_SECONDS="-1")
    assert started.returncode != 0
    assert "RELAY_ALIVE_SECONDS must be a number of seconds > 0, not '-1'" in started.stderr
    started = start_relay(tmp_path, RELAY_TIMEOUT="nan")
    assert "RELAY_TIMEOUT must be a number of seconds > 0, not 'nan'" in started.stderr
    started = start_relay(tmp_path, CHANNEL_BACKEND="redis", REDIS_URLS="redis-1:6379")
    assert started.returncode != 0
    assert "REDIS_URLS='redis-1:6379': it has no scheme" in started.stderr
