"""Bounds on every run, whoever starts it: the web UI accepts any user count and an empty run time.

MAX_USERS (default 2000) stops a run that asks for more users; MAX_RUN_TIME (seconds,
default 1800) stops any run, headless or from the UI, that is still going by then.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import Runner, WorkerRunner

from .config import env_float, env_int

logger = logging.getLogger(__name__)

MAX_USERS = env_int("MAX_USERS", 2000, 1, 100000)
MAX_RUN_TIME = env_float("MAX_RUN_TIME", 1800.0, 1.0, 86400.0)
_timer: gevent.Greenlet | None = None


def _stop(environment: Environment, runner: Runner, reason: str, exit_code: int | None = None) -> None:
    """Stop the users; a headless Locust also exits (the web UI stays up for the next run)."""
    logger.error("stopping the run: %s", reason)
    if exit_code is not None:
        environment.process_exit_code = exit_code
    if getattr(environment.parsed_options, "headless", False):
        runner.quit()
    else:
        runner.stop()


@events.test_start.add_listener
def bound_the_run(environment: Environment, **_kwargs: Any) -> None:
    """Arm the run-time limit and refuse too many users (on the master or the local runner)."""
    global _timer
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return
    if _timer is not None:
        _timer.kill(block=False)
    reason = f"MAX_RUN_TIME ({MAX_RUN_TIME:g} s) reached"
    _timer = gevent.spawn_later(MAX_RUN_TIME, _stop, environment, runner, reason)
    if runner.target_user_count > MAX_USERS:
        reason = f"{runner.target_user_count} users asked for, more than MAX_USERS ({MAX_USERS})"
        gevent.spawn(_stop, environment, runner, reason, 2)


@events.test_stop.add_listener
def disarm(environment: Environment, **_kwargs: Any) -> None:
    global _timer
    if _timer is not None:
        _timer.kill(block=False)
        _timer = None
