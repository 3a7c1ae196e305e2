"""A worker's state in Redis, so any process can see which workers live and how busy they are.

Each ``KitWorker`` on a Redis layer writes a small hash from its heartbeat loop::

    <prefix>:workers:<hostname>:<pid>  ->  host, pid, channels, busy, received, handled, failed, ...

on the shard the layer's ``consistent_hash`` picks for that key, with a TTL of
three heartbeats: a worker that dies without cleaning up vanishes on its own.
``channels_kit.status`` reads them back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger("channels_kit.worker")

WORKERS_INFIX = ":workers:"
# Heartbeats a published state outlives: one missed beat must not make a live worker vanish.
TTL_HEARTBEATS = 3


class _Stats(Protocol):
    received: int
    handled: int
    failed: int


class ObservableWorker(Protocol):
    """What the publisher reads from a worker (``KitWorker`` has it)."""

    channels: list[str]
    stats: Mapping[str, _Stats]

    def busy_count(self, channel: str | None = None) -> int: ...


def supports_worker_state(layer: Any) -> bool:
    """Whether ``layer`` is a (kit or stock) Redis layer, the only kind that can carry the state."""
    return all(hasattr(layer, name) for name in ("connection", "prefix", "consistent_hash", "ring_size"))


def workers_pattern(prefix: str) -> str:
    """The SCAN pattern of every published worker state under ``prefix`` (glob characters escaped)."""
    return escape_glob(prefix + WORKERS_INFIX) + "*"


def escape_glob(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def worker_identity() -> str:
    """``<hostname>:<pid>``: unique per worker process (the hostname is the container's)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerState:
    """One worker process, as it last published itself."""

    host: str
    pid: int
    channels: tuple[str, ...]
    busy: int
    received: int
    handled: int
    failed: int
    started: float  # epoch seconds
    updated: float  # epoch seconds of the last heartbeat

    def to_hash(self) -> dict[str, str]:
        return {
            "host": self.host,
            "pid": str(self.pid),
            "channels": ",".join(self.channels),
            "busy": str(self.busy),
            "received": str(self.received),
            "handled": str(self.handled),
            "failed": str(self.failed),
            "started": repr(self.started),
            "updated": repr(self.updated),
        }

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> WorkerState:
        """Parse a hash as Redis returns it (bytes); missing or garbled numbers read as 0."""
        fields = {decode(k): decode(v) for k, v in raw.items()}

        def number(name: str, kind: type = int) -> Any:
            try:
                return kind(fields.get(name, 0))
            except ValueError:
                return kind(0)

        return cls(
            host=fields.get("host", "?"),
            pid=number("pid"),
            channels=tuple(c for c in fields.get("channels", "").split(",") if c),
            busy=number("busy"),
            received=number("received"),
            handled=number("handled"),
            failed=number("failed"),
            started=number("started", float),
            updated=number("updated", float),
        )


def decode(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode("utf8", "replace") if isinstance(value, bytes) else value


def snapshot(worker: ObservableWorker, host: str, pid: int, started: float) -> WorkerState:
    """The worker's state right now."""
    stats = list(worker.stats.values())
    return WorkerState(
        host=host,
        pid=pid,
        channels=tuple(worker.channels),
        busy=worker.busy_count(),
        received=sum(s.received for s in stats),
        handled=sum(s.handled for s in stats),
        failed=sum(s.failed for s in stats),
        started=started,
        updated=time.time(),
    )


class WorkerStatePublisher:
    """Writes one worker's state to Redis on every heartbeat; deletes it on a clean exit."""

    def __init__(
        self,
        layer: Any,
        worker: ObservableWorker,
        *,
        heartbeat_interval: float,
        identity: str | None = None,
    ) -> None:
        self.layer = layer
        self.worker = worker
        self.identity = identity or worker_identity()
        self.host, _, pid = self.identity.rpartition(":")
        self.pid = int(pid) if pid.isdigit() else os.getpid()
        self.key = layer.prefix + WORKERS_INFIX + self.identity
        self.shard = layer.consistent_hash(self.key)
        # Milliseconds, so sub-second heartbeats (tests) still get a TTL above one beat.
        self.ttl_ms = max(1000, math.ceil(TTL_HEARTBEATS * heartbeat_interval * 1000))
        self.started = time.time()
        self._failing = False

    async def publish(self) -> None:
        """Write the current state and refresh its TTL (one round trip, atomic)."""
        state = snapshot(self.worker, self.host, self.pid, self.started)
        async with self.layer.connection(self.shard).pipeline(transaction=True) as pipe:
            # DEL first: a restarted worker with the same identity never keeps stale fields.
            pipe.delete(self.key)
            pipe.hset(self.key, mapping=state.to_hash())
            pipe.pexpire(self.key, self.ttl_ms)
            await pipe.execute()

    async def publish_safely(self, timeout: float) -> bool:
        """``publish()`` bounded by ``timeout``; a failure is logged once per outage, never raised,
        because visibility must not take the worker down."""
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the publish completes, and the heartbeat would then never stop.
            async with asyncio.timeout(timeout):
                await self.publish()
        except Exception as exc:  # noqa: BLE001 - logged; the next heartbeat retries
            if not self._failing:
                logger.warning("could not publish worker state to Redis (%r); retrying each heartbeat", exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("worker state published again")
        self._failing = False
        return True

    async def withdraw(self, timeout: float = 2.0) -> None:
        """Delete the published state (clean exit), so status stops listing this worker at once."""
        try:
            async with asyncio.timeout(timeout):
                await self.layer.connection(self.shard).delete(self.key)
        except Exception as exc:  # noqa: BLE001 - the TTL removes it anyway
            logger.info("could not withdraw worker state (%r); it expires on its own", exc)
