"""The first hour of a project on the kit: the relay refuses a layer no worker shares,
``/readyz`` names what does not answer, and the kit's log lines show without ``LOGGING``
and never twice with it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.test import RequestFactory
from django.test.utils import override_settings

from channels_kit.health import readyz

APP_DIR = Path(__file__).resolve().parents[1]


# --- the relay ----------------------------------------------------------------------------


def load_relay(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Import the relay's ASGI application, as Daphne does, in a process with ``env``."""
    layer_names = ("CHANNEL_BACKEND", "REDIS_URLS", "REDIS_URL", "REDIS_TLS_URL", "DJANGO_SETTINGS_MODULE")
    clean = {name: value for name, value in os.environ.items() if name not in layer_names}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from channels_kit.relay.asgi import application; print(type(application).__name__)",
        ],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("env", [{}, {"CHANNEL_BACKEND": "memory"}], ids=["no-layer-named", "memory"])
def test_the_relay_refuses_the_in_memory_layer(env):
    result = load_relay(env)
    assert result.returncode != 0
    assert "ImproperlyConfigured: the channel layer is Channels' in-memory one" in result.stderr, (
        result.stderr
    )
    assert "Name the layer the workers use" in result.stderr


def test_the_relay_takes_a_layer_the_workers_share(tmp_path):
    result = load_relay({"CHANNEL_BACKEND": "local", "LOCAL_LAYER_PATH": str(tmp_path / "layer.sqlite3")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "RelayApplication"


# --- /readyz ------------------------------------------------------------------------------


def ready_answer(layers: dict) -> tuple[int, dict]:
    with override_settings(CHANNEL_LAYERS=layers):
        response = asyncio.run(readyz(RequestFactory().get("/readyz")))
    return response.status_code, json.loads(response.content)


def test_readyz_names_the_layer_server_that_does_not_answer_and_why():
    """Nothing listens at the layer's address: within the readiness timeout the check says
    so, naming the server (password masked)."""
    layers = {
        "default": {
            "BACKEND": "channels_kit.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://:s3cret@127.0.0.1:1/0", "socket_connect_timeout": 1}]},
        }
    }
    status, body = ready_answer(layers)
    check = body["checks"]["channel_layer"]
    assert status == 503 and check["ok"] is False
    assert check["servers"] == ["redis://:***@127.0.0.1:1/0"]
    assert check["backend"] == "channels_kit.layers.redis.layer.RedisChannelLayer"
    assert check["error"] == "TimeoutError: no answer within 3.0 s"
    assert "s3cret" not in json.dumps(body)
    # The tests' settings have no database: said, with the error.
    assert body["checks"]["database"]["server"] == "unknown"  # Django's dummy backend
    assert body["checks"]["database"]["error"].startswith("ImproperlyConfigured: ")


def test_readyz_names_the_shard_of_its_check_on_a_sharded_layer(redis_url):
    layers = {
        "default": {
            "BACKEND": "channels_kit.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": redis_url}, {"address": "redis://127.0.0.1:1/0"}]},
        }
    }
    _, body = ready_answer(layers)
    check = body["checks"]["channel_layer"]
    assert len(check["servers"]) == 2 and check["server"] in check["servers"]
    # The check's channel is on one shard, named; ready whichever it is: a channel of the dead
    # shard goes to its spare, the live one, which the process reads too.
    assert check["ok"] is True, check


# --- the kit's log lines --------------------------------------------------------------------

LOG_LINES = """
import logging
import django
django.setup()
logging.getLogger("channels_kit.worker.server").info("an info line")
logging.getLogger("channels_kit.worker.server").warning("a warning line")
logging.getLogger("channels_kit.worker.server").debug("a debug line")
"""
ROOT_AT = """
from tests.settings import *  # noqa: F403
LOGGING = {{
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {{"console": {{"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}}}},
    "root": {{"handlers": ["console"], "level": "{level}"}},
}}
"""


def log_output(tmp_path: Path, logging_settings: str | None, log_level: str = "") -> str:
    """What a process of a project with these ``LOGGING`` settings prints (stdout and stderr)."""
    settings = "tests.settings"
    if logging_settings is not None:
        (tmp_path / "custom_settings.py").write_text(textwrap.dedent(logging_settings))
        settings = "custom_settings"
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": settings,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(APP_DIR), os.environ.get("PYTHONPATH", "")]),
        "LOG_LEVEL": log_level,
    }
    result = subprocess.run(
        [sys.executable, "-c", LOG_LINES], cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("logging_settings", "log_level", "info", "debug"),
    [
        (None, "", 1, 0),  # no LOGGING: Django's default would show warnings only
        (None, "DEBUG", 1, 1),
        (None, "WARNING", 0, 0),
        (ROOT_AT.format(level="INFO"), "", 1, 0),  # the project shows INFO already: nothing added
        (ROOT_AT.format(level="WARNING"), "", 1, 0),  # the project's handler shows the rest
    ],
    ids=["no-logging", "log-level-debug", "log-level-warning", "root-info", "root-warning"],
)
def test_the_kits_lines_show_once_whatever_the_projects_logging(
    tmp_path, logging_settings, log_level, info, debug
):
    out = log_output(tmp_path, logging_settings, log_level)
    assert out.count("an info line") == info, out
    assert out.count("a warning line") == 1, out
    assert out.count("a debug line") == debug, out


def test_a_bad_log_level_is_named(tmp_path):
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "tests.settings", "LOG_LEVEL": "loud"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=APP_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "LOG_LEVEL='loud': expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in result.stderr
