"""One listener and one application instance of a worker: bounded prefetch, busy tracking.

Channels' ``Worker`` keeps calling ``layer.receive()`` and queues every message on
the application instance, so one worker drains a whole channel into its memory:
other workers starve, and a crash loses all of it. A ``ConsumerSlot`` takes the
next message only once its instance is idle, so each slot holds at most one
message outside the layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.compatibility import guarantee_single_callable
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db import connections

from channels_kit.layers.base import ChannelLayer
from channels_kit.observe.consumer_errors import errors_logger
from channels_kit.observe.worker_state import ChannelStats

# How long a round's end waits for its thread to close its database connections.
CLOSE_SECONDS = 5.0

logger = logging.getLogger(__name__)

# Pause before replacing an instance that died without taking a message (e.g. its
# constructor raises), so a broken consumer cannot spin the loop.
RESPAWN_BACKOFF_SECONDS = 1.0

Send = Callable[[dict], Awaitable[None]]
# Runs one relay work message (channel, message); True when it went well.
Handler = Callable[[str, dict], Awaitable[bool]]


class _Instance:
    """A running application instance and the state the slot needs about it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict] = asyncio.Queue()
        # Set while the instance waits in receive() with nothing handed over.
        self.idle = asyncio.Event()
        # True from the moment the instance took a message until it asks for the next.
        self.holding = False
        self.took_any = False
        self.future: asyncio.Future[None] | None = None


class Slot:
    """One message at a time from one channel: what both kinds of slot share."""

    def __init__(self, *, channel: str, index: int, channel_layer: ChannelLayer, stats: ChannelStats) -> None:
        self.channel = channel
        self.scope_id = f"{channel}#{index}"
        self.channel_layer = channel_layer
        self.stats = stats
        self.in_flight: dict | None = None
        self.in_flight_since = 0.0
        self._receiving: asyncio.Future[dict] | None = None
        self._stopping = False

    @property
    def busy(self) -> bool:
        """True while a message taken from the layer is not finished."""
        return self.running() > 0

    def running(self) -> int:
        """Messages this slot took from the layer and did not finish (held ones included)."""
        return 0 if self.in_flight is None else 1

    def held_count(self) -> int:
        """Of those, the ones released from the slot that still run (``RelaySlot``)."""
        return 0

    async def _take(self) -> dict | None:
        """The channel's next message, or None once ``stop_taking()`` cancelled the wait."""
        self._receiving = asyncio.ensure_future(self.channel_layer.receive(self.channel))
        try:
            return await self._receiving
        except asyncio.CancelledError:
            # Our own stop_taking() cancelled the receive: leave quietly. A
            # cancellation of this task itself must propagate.
            if self._stopping and not asyncio.current_task().cancelling():
                return None
            raise
        finally:
            self._receiving = None

    def stop_taking(self) -> asyncio.Future[dict] | None:
        """Take no new message; cancel a pending ``layer.receive()`` and return it to await."""
        self._stopping = True
        receiving = self._receiving
        if receiving is not None:
            receiving.cancel()
        return receiving


class ConsumerSlot(Slot):
    """Feeds one application instance from one channel, one message at a time.

    The instance is busy from the moment the slot hands it a message until it calls
    ``receive`` again. An instance that raises is logged (with its traceback) on
    ``channels_kit.worker.errors``, counted, and replaced for the next message.
    """

    def __init__(
        self,
        *,
        channel: str,
        index: int,
        application: Any,
        channel_layer: ChannelLayer,
        stats: ChannelStats,
        send: Send,
    ) -> None:
        super().__init__(channel=channel, index=index, channel_layer=channel_layer, stats=stats)
        self.application = application
        self.send = send
        self.instances_started = 0
        self._instance: _Instance | None = None

    def describe_in_flight(self) -> str:
        """``thumbnail#0: task.run for 3.2s``, for logs about abandoned work."""
        if self.in_flight is None:
            return f"{self.scope_id}: idle"
        age = time.monotonic() - self.in_flight_since
        return f"{self.scope_id}: {self.in_flight.get('type')} for {age:.1f}s"

    async def run(self) -> None:
        """Serve until ``stop_taking()``; returns once nothing is in flight any more."""
        while not self._stopping:
            await self._until_idle()
            if self._stopping:
                break
            message = await self._take()
            if message is None:
                break
            # Delivered even when stopping: the layer already gave it to us.
            self._deliver(message)
        await self._until_idle()

    async def close(self, timeout: float) -> None:
        """Stop the application instance, waiting at most ``timeout`` seconds."""
        instance, self._instance = self._instance, None
        if instance is not None and instance.future is not None and not instance.future.done():
            instance.future.cancel()
            await asyncio.wait({instance.future}, timeout=timeout)
            if instance.future.done() and not instance.future.cancelled():
                # An idle instance ends with its layer's error when the layer is gone at
                # shutdown (Redis stopped first): expected then, and not worth a traceback.
                error = instance.future.exception()
                if error is not None:
                    logger.info("%s: the consumer ended with %r while stopping", self.scope_id, error)

    # --- the instance -------------------------------------------------------------

    async def _until_idle(self) -> None:
        """Wait until the instance can take a message, replacing it when it died.

        While stopping, nothing new is started: this returns once no message is in flight.
        """
        while True:
            instance = self._instance
            if instance is None or instance.future is None or instance.future.done():
                carry_over = None
                if instance is not None:
                    self._reap(instance)
                    carry_over = instance if not instance.queue.empty() else None
                    if not instance.took_any and carry_over is None and not self._stopping:
                        await asyncio.sleep(RESPAWN_BACKOFF_SECONDS)
                if self._stopping and carry_over is None:
                    return
                instance = self._spawn(carry_over)
            if instance.idle.is_set() or (self._stopping and not self.busy):
                return
            idle = asyncio.ensure_future(instance.idle.wait())
            try:
                await asyncio.wait({idle, instance.future}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                idle.cancel()

    def _spawn(self, carry_over: _Instance | None) -> _Instance:
        instance = _Instance()
        if carry_over is not None and not carry_over.queue.empty():
            # Handed to an instance that died before taking it: the new one takes it.
            instance.queue.put_nowait(carry_over.queue.get_nowait())
        instance.future = asyncio.ensure_future(self._run_instance(instance))
        self._instance = instance
        self.instances_started += 1
        return instance

    async def _run_instance(self, instance: _Instance) -> None:
        async def receive() -> dict:
            if instance.holding:
                instance.holding = False
                self._finish(ok=True)
            if instance.queue.empty():
                instance.idle.set()
            message = await instance.queue.get()
            instance.idle.clear()
            instance.holding = instance.took_any = True
            return message

        app = guarantee_single_callable(self.application)
        # A thread per instance for sync code: by default asgiref runs every
        # thread-sensitive call (SyncConsumer handlers) on one thread per process,
        # so a slow job on one channel would block every other channel.
        async with ThreadSensitiveContext():
            await app(scope={"type": "channel", "channel": self.channel}, receive=receive, send=self.send)

    def _reap(self, instance: _Instance) -> None:
        """Account for an instance that ended: log its exception, count its message."""
        self._instance = None
        assert instance.future is not None
        error = None if instance.future.cancelled() else instance.future.exception()
        held = self.in_flight if instance.holding else None
        what = f"a {held.get('type')} message" if held else "no message"
        if instance.holding:
            self._finish(ok=error is None)
        if error is not None:
            errors_logger.error(
                "consumer on channel %s (%s) raised while handling %s; a new instance takes the next",
                self.channel,
                self.scope_id,
                what,
                exc_info=error,
            )

    def _deliver(self, message: Any) -> None:
        self.stats.received += 1
        if not isinstance(message, dict) or not message.get("type"):
            # Upstream raises here and kills the worker; the message is gone either way.
            self.stats.failed += 1
            errors_logger.error("dropping message without a type on %s: %r", self.channel, message)
            return
        instance = self._instance
        assert instance is not None
        self.in_flight, self.in_flight_since = message, time.monotonic()
        instance.idle.clear()
        instance.queue.put_nowait(message)

    def _finish(self, ok: bool) -> None:
        if self.in_flight is None:
            return
        if ok:
            self.stats.handled += 1
        else:
            self.stats.failed += 1
        self.in_flight = None


class HeldMessages:
    """Relay messages that outlived ``release_after`` seconds and gave their slot back.

    A long-poll waiting for its room's next message, or a WebSocket event waiting on a slow
    service, would otherwise hold one of a worker's few slots for its whole wait: eight
    held long-polls starved every page. Past ``release_after`` seconds a running message
    leaves its slot (which takes the next message) and goes on as a *held* message, while
    fewer than ``limit`` are held in this process; beyond that it keeps its slot, as before.
    A held message keeps the thread its sync code ran on; its slot starts a new one.
    """

    def __init__(self, limit: int, release_after: float) -> None:
        if limit < 0:
            raise ValueError(f"the held messages' limit must not be negative (0: none), not {limit}")
        if not (math.isfinite(release_after) and release_after > 0):
            raise ValueError(f"release_after must be a number of seconds above 0, not {release_after}")
        self.limit = limit
        self.release_after = release_after
        self.count = 0
        self.released = 0  # messages that left their slot, since start

    def take_place(self) -> bool:
        """A place for one more held message; False when ``limit`` are held already."""
        if self.count >= self.limit:
            return False
        self.count += 1
        self.released += 1
        return True

    def give_back(self) -> None:
        self.count -= 1


class RelaySlot(Slot):
    """Takes one message at a time from a relay work channel and runs it through a handler.

    Unlike a ``ConsumerSlot``, every message is a fresh application call (an HTTP request,
    one WebSocket event), so there is no long-lived instance; the slot keeps one thread
    for sync code, as a ``ConsumerSlot`` does, and the same bounded prefetch. With
    ``held`` (``HeldMessages``), a message still running after ``held.release_after``
    seconds frees the slot and finishes as a held message (with the slot's thread): the
    slot goes on with a new thread.
    """

    def __init__(
        self,
        *,
        channel: str,
        index: int,
        handler: Handler,
        channel_layer: ChannelLayer,
        stats: ChannelStats,
        held: HeldMessages | None = None,
    ) -> None:
        super().__init__(channel=channel, index=index, channel_layer=channel_layer, stats=stats)
        self.handler = handler
        self.held = held
        # Messages this slot released, still running: task -> (message, since).
        self.holding: dict[asyncio.Future[None], tuple[dict, float]] = {}

    def running(self) -> int:
        return super().running() + len(self.holding)

    def held_count(self) -> int:
        return len(self.holding)

    def describe_in_flight(self) -> str:
        described = [self._describe(message, since) for message, since in self.holding.values()]
        if self.in_flight is not None:
            described.insert(0, self._describe(self.in_flight, self.in_flight_since))
        return f"{self.scope_id}: {', '.join(described) or 'idle'}"

    def _describe(self, message: dict, since: float) -> str:
        scope = message.get("relay", {}).get("scope", {})
        what = " ".join(str(scope[key]) for key in ("method", "path") if key in scope) or self.channel
        return f"{what} for {time.monotonic() - since:.1f}s"

    async def run(self) -> None:
        """Serve until ``stop_taking()``; returns once the messages in hand (held ones too)
        are finished. Each round runs with a thread of its own for sync code, until one of
        its messages is released (held): the next round then starts at once."""
        try:
            while not self._stopping:
                released = asyncio.Event()
                round_ = asyncio.ensure_future(self._round(released))
                waiting = asyncio.ensure_future(released.wait())
                try:
                    await asyncio.wait({round_, waiting}, return_when=asyncio.FIRST_COMPLETED)
                except asyncio.CancelledError:
                    # Abandoned (the grace period is over): the message in hand goes too.
                    round_.cancel()
                    await asyncio.wait({round_})
                    raise
                finally:
                    waiting.cancel()
                if not released.is_set():
                    await round_  # stopping (or the layer failed: raises)
                    break
            if self.holding:
                await asyncio.wait(set(self.holding))
        finally:
            await _cancel_all(set(self.holding))

    async def _round(self, released: asyncio.Event) -> None:
        """Take and run messages on one thread-sensitive context until stopping, or until a
        message is released: that one is finished here, with this round's thread."""
        async with ThreadSensitiveContext():
            try:
                await self._serve_round(released)
            finally:
                # This round's thread ends with it: its database connections (kept for
                # CONN_MAX_AGE otherwise) are closed now, not left to the server's limit.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sync_to_async(connections.close_all)(), CLOSE_SECONDS)

    async def _serve_round(self, released: asyncio.Event) -> None:
        """The messages of one round (``_round``), on its thread-sensitive context."""
        while not self._stopping:
            message = await self._take()
            if message is None:
                return
            self.stats.received += 1
            self.in_flight, self.in_flight_since = message, time.monotonic()
            job = asyncio.ensure_future(self._handle(message))
            try:
                if self.held is not None:
                    await _wait_cancelling(job, self.held.release_after)
                if not job.done() and self.held is not None and self.held.take_place():
                    self.holding[asyncio.current_task()] = (message, self.in_flight_since)
                    self.in_flight = None
                    released.set()
                    try:
                        await _wait_cancelling(job)
                    finally:
                        self.held.give_back()
                        self.holding.pop(asyncio.current_task(), None)
                    return
                await _wait_cancelling(job)
            finally:
                self.in_flight = None

    async def _handle(self, message: dict) -> None:
        try:
            ok = await self.handler(self.channel, message)
        except Exception:
            errors_logger.exception("relaying a %s message failed", self.channel)
            ok = False
        if ok:
            self.stats.handled += 1
        else:
            self.stats.failed += 1

    async def close(self, timeout: float) -> None:
        """Nothing outlives a message."""


async def _wait_cancelling(job: asyncio.Future[None], timeout: float | None = None) -> None:
    """Wait for ``job`` (at most ``timeout`` seconds); a cancellation of the waiting task
    cancels ``job`` too, and waits for it to end."""
    try:
        await asyncio.wait({job}, timeout=timeout)
    except asyncio.CancelledError:
        job.cancel()
        await asyncio.wait({job})
        raise
    if job.done():
        job.result()


async def _cancel_all(tasks: set[asyncio.Future[None]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
