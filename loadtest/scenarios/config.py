"""Settings of the scenarios, from the environment (every one has a bounded default)."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field


def env_float(name: str, default: float, low: float, high: float) -> float:
    """A float from the environment, clamped to [low, high] so no setting makes a run unbounded."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        value = default
    return min(max(value, low), high)


def env_int(name: str, default: int, low: int, high: int) -> int:
    return int(env_float(name, default, low, high))


def _run_prefix() -> str:
    """Room-name prefix unique to this Locust process: rooms never mix two runs or two processes."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[-8:] or "host"
    return f"lt{host}{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    """What the scenarios read from the environment (see loadtest/README.md)."""

    # The Host and Origin the site accepts (DJANGO_ALLOWED_HOSTS): the target is nginx on the
    # compose network, whose own name is not an allowed host.
    host_header: str = field(default_factory=lambda: os.environ.get("LOADTEST_HOST_HEADER", "localhost"))
    origin: str = field(default_factory=lambda: os.environ.get("LOADTEST_ORIGIN", "http://localhost"))
    # Multiplies every think time: 1 is a person's pace, 0.1 a busy script's.
    think_scale: float = field(default_factory=lambda: env_float("THINK_SCALE", 1.0, 0.0, 100.0))
    # Chat: members per small room, members per large (fan-out) room, delivery deadline.
    small_room_size: int = field(default_factory=lambda: env_int("CHAT_ROOM_SIZE", 5, 2, 1000))
    large_room_size: int = field(default_factory=lambda: env_int("FANOUT_ROOM_SIZE", 1000, 2, 100000))
    delivery_timeout: float = field(default_factory=lambda: env_float("DELIVERY_TIMEOUT", 10.0, 1.0, 120.0))
    # Background tasks: the channel, the simulated work per task, the wait for completion.
    task_channel: str = field(default_factory=lambda: os.environ.get("TASK_CHANNEL", "tasks"))
    task_sleep: float = field(default_factory=lambda: env_float("TASK_SLEEP", 0.05, 0.0, 30.0))
    task_timeout: float = field(default_factory=lambda: env_float("TASK_TIMEOUT", 30.0, 1.0, 300.0))
    # Polls of GET /tasks/<id> back off from 50 ms to this interval.
    task_poll_max: float = field(default_factory=lambda: env_float("TASK_POLL_MAX", 0.5, 0.05, 5.0))
    # Long-poll: the server-side wait asked for, members per long-poll room.
    poll_timeout: float = field(default_factory=lambda: env_float("POLL_TIMEOUT", 10.0, 1.0, 60.0))
    poll_room_size: int = field(default_factory=lambda: env_int("POLL_ROOM_SIZE", 5, 1, 1000))
    # The I/O-bound endpoint of relay mode (issue 5): a sync view that blocks ~50 ms.
    io_path: str = field(default_factory=lambda: os.environ.get("IO_PATH", "/io/"))
    run_prefix: str = field(default_factory=_run_prefix)

    def think(self, low: float, high: float) -> tuple[float, float]:
        """A think-time range scaled by THINK_SCALE."""
        return low * self.think_scale, high * self.think_scale


SETTINGS = Settings()
