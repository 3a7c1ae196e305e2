"""Which relay channels live workers serve, as an interface server sees it.

Every ``runworker`` publishes its state (the channels it serves) through the layer's
inspector, with a TTL of a few heartbeats, and withdraws it on a clean exit. The watch
reads those states every ``interval`` seconds. When no live worker serves a channel
(``http.request``, ``websocket.connect``), the relay answers new requests and sockets on
it at once (after a short wait for a worker to appear) instead of letting each hang
until its timeout, and the log says so when that starts and ends.

The watch only ever says "absent" after it has read the states successfully: an
inspector error, or a backend that cannot be inspected, means "unknown", and the relay
then behaves as without the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from channels_kit.layers.base import ChannelLayer, LayerInspector, inspector_for
from channels_kit.observe.worker_state import interface_presence, worker_identity

logger = logging.getLogger(__name__)

# How often a waiting request looks again for a worker that appeared.
RECHECK_SECONDS = 0.2
# Reads this interface's published presence outlives (a worker in direct mode looks for it).
PRESENCE_READS = 3


class WorkerWatch:
    """The channels served by live workers, read from their published states."""

    def __init__(self, layer: ChannelLayer, channels: Iterable[str], interval: float = 2.0) -> None:
        inspector = inspector_for(layer)
        self.inspector: LayerInspector | None = (
            inspector if inspector is not None and inspector.shares_worker_state else None
        )
        self.channels = tuple(channels)
        self.interval = interval
        #: The watched channels live workers serve; None while that is not known.
        self.served: frozenset[str] | None = None
        self._task: asyncio.Task | None = None
        self._first_read: asyncio.Event | None = None
        self.identity = worker_identity()
        self.started = time.time()

    def serves(self, channel: str) -> bool | None:
        """Whether a live worker serves ``channel``; None when that is not known."""
        self._start()
        return None if self.served is None else channel in self.served

    def _start(self) -> None:
        if self._task is None and self.inspector is not None:
            self._first_read = asyncio.Event()
            self._task = asyncio.ensure_future(self._run())

    async def absent(self, channel: str, wait: float) -> bool:
        """True when no live worker serves ``channel`` and none appears within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        self._start()
        if self._first_read is not None and not self._first_read.is_set():
            # The first request of this process: the first read of the states is under way.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_read.wait(), wait)
        while self.serves(channel) is False:
            if time.monotonic() >= deadline:
                return True
            await asyncio.sleep(min(RECHECK_SECONDS, max(0.0, deadline - time.monotonic())))
        return False

    async def _run(self) -> None:
        assert self.inspector is not None
        while True:
            await self._say_present()
            try:
                states = await self.inspector.worker_states()
            except Exception as error:  # noqa: BLE001 - not known, for now: the relay waits as usual
                logger.warning("reading the workers' states failed (%r); not known whether any runs", error)
                self.served = None
            else:
                served = frozenset(c for state in states for c in state.channels if c in self.channels)
                self._log_change(served)
                self.served = served
            assert self._first_read is not None
            self._first_read.set()
            await asyncio.sleep(self.interval)

    async def _say_present(self) -> None:
        """Publish this interface among the workers' states (``observe.worker_state.INTERFACE_MARK``),
        for a few reads: a worker in direct mode beside it then refuses to run."""
        assert self.inspector is not None
        try:
            state = interface_presence(self.identity, self.started)
            await self.inspector.save_worker_state(state, PRESENCE_READS * self.interval)
        except Exception as error:  # noqa: BLE001 - the next read tries again
            logger.debug("could not publish this interface's presence (%r)", error)

    def _log_change(self, served: frozenset[str]) -> None:
        before = self.served if self.served is not None else frozenset(self.channels)
        gone, back = sorted(before - served), sorted(served - before)
        if gone:
            logger.warning(
                "no live worker serves %s: new requests and sockets there are refused (503, 4503)",
                ", ".join(gone),
            )
        if back and self.served is not None:
            logger.info("workers serve %s again", ", ".join(back))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
