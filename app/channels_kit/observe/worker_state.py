"""A worker's published state, so that any process can see which workers live and how busy they are.

Each ``KitWorker`` whose layer shares worker state (the Redis layers) saves a small
record from its heartbeat loop (host, pid, channels, busy, received, handled, failed,
start time) through the layer's inspector, with a TTL of three heartbeats: a worker that
dies without cleaning up vanishes on its own. ``channels_kit.observe.status`` reads them back.

``ChannelStats`` (the per-channel counters a worker keeps, and ``/metrics`` reads) and
``worker_identity()`` (``<hostname>:<pid>``, one worker process) live here too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from channels_kit.layers.base import LayerInspector, WorkerState

logger = logging.getLogger(__name__)

# Heartbeats a published state outlives: one missed beat must not make a live worker vanish.
TTL_HEARTBEATS = 3
# The shortest TTL, so that sub-second heartbeats (tests) still outlive one beat.
MIN_TTL_SECONDS = 1.0


# Relay interfaces publish themselves among the workers' states with this one "channel", so
# that a worker in another mode sees them and refuses to run beside them (worker.mode_guard);
# ``make status`` and /metrics leave these states out.
INTERFACE_MARK = "relay.interface"


def is_interface(state: WorkerState) -> bool:
    """Whether a published state is a relay interface's presence, not a worker's."""
    return INTERFACE_MARK in state.channels


def interface_presence(identity: str, started: float) -> WorkerState:
    """The state a relay interface publishes: ``identity`` (``<host>:<pid>``), no counters.
    Its host is marked (``relay@<host>``): a worker in the same process (one-process mode, the
    tests) publishes its own state under the plain identity, and neither overwrites the other."""
    host, _, pid = identity.rpartition(":")
    return WorkerState(
        host=f"relay@{host}",
        pid=int(pid) if pid.isdigit() else os.getpid(),
        channels=(INTERFACE_MARK,),
        busy=0,
        received=0,
        handled=0,
        failed=0,
        started=started,
        updated=time.time(),
    )


@dataclass
class ChannelStats:
    """Message counters of one channel in one worker process."""

    received: int = 0  # taken from the layer
    handled: int = 0  # finished: the consumer asked for the next message
    failed: int = 0  # the consumer raised, or the message had no type


class ObservableWorker(Protocol):
    """What the publisher reads from a worker (``KitWorker`` has it)."""

    channels: list[str]
    stats: Mapping[str, ChannelStats]

    def busy_count(self, channel: str | None = None) -> int: ...


def worker_identity() -> str:
    """``<hostname>:<pid>``: one worker process (the hostname is the container's), as its
    published state and relay beats name it. Not ``observe.identity.server_identity()``,
    ``<role>/<hostname>``, which names a container in ``X-Served-By``."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
    """Saves one worker's state on every heartbeat; deletes it on a clean exit."""

    def __init__(
        self,
        inspector: LayerInspector,
        worker: ObservableWorker,
        *,
        heartbeat_interval: float,
        identity: str | None = None,
    ) -> None:
        self.inspector = inspector
        self.worker = worker
        self.identity = identity or worker_identity()
        self.host, _, pid = self.identity.rpartition(":")
        self.pid = int(pid) if pid.isdigit() else os.getpid()
        self.ttl = max(MIN_TTL_SECONDS, TTL_HEARTBEATS * heartbeat_interval)
        self.started = time.time()
        self._failing = False

    async def publish(self) -> None:
        """Save the current state and refresh its TTL."""
        state = snapshot(self.worker, self.host, self.pid, self.started)
        await self.inspector.save_worker_state(state, self.ttl)

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
                logger.warning("could not publish worker state (%r); retrying each heartbeat", exc)
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
                await self.inspector.delete_worker_state(self.host, self.pid)
        except Exception as exc:  # noqa: BLE001 - the TTL removes it anyway
            logger.info("could not withdraw worker state (%r); it expires on its own", exc)
