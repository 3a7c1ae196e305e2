"""The kit's worker server: bounded prefetch, a clean SIGTERM drain and a heartbeat.

A worker sent SIGTERM must exit cleanly after finishing the consumers it is running,
so that queued messages go to the workers that replace it. Here that means: stop
taking messages (cancel the pending ``layer.receive()`` calls), hand back what the
layer fetched but did not deliver, let in-flight consumers finish within a grace
period, then exit 0.

A worker whose layer does not answer serves nothing, and says so:

- **At start, fail fast.** Before it serves, the worker probes its layer (a message sent
  to a channel of its own and received back). No answer within ``layer_wait`` seconds
  (``WORKER_LAYER_WAIT_SECONDS``, 30): it raises ``LayerUnreachable``, naming the layer's
  servers and the error, and ``runworker`` exits non-zero (its supervisor restarts it).
- **Later, keep trying, but stop the heartbeat.** An outage after start (a Redis restart,
  a shard down) must not kill workers: the layer reconnects and they serve again. Each
  heartbeat probes the layer first and touches the heartbeat file only when it answered,
  so while no answer comes the file grows stale and the healthcheck reports the worker
  unhealthy; the outage and its end are logged once each. On a sharded layer the probe's
  channel lives on one shard, so a single shard down shows only on the workers whose
  channels it holds, and only as long as it is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import uuid
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from channels.worker import Worker

from channels_kit.conf import layer_servers
from channels_kit.event_loop import loop_kind, new_event_loop
from channels_kit.layers.base import ChannelLayer, DrainableLayer, backend_name, inspector_for
from channels_kit.observe.worker_state import ChannelStats, WorkerStatePublisher
from channels_kit.worker.mode_guard import ModeGuard, ModeMismatch
from channels_kit.worker.slots import ConsumerSlot, Handler, HeldMessages, RelaySlot, Send, Slot

logger = logging.getLogger(__name__)

# Exit status when in-flight work was abandoned (deadline passed or a second signal).
EXIT_ABANDONED = 1
# How long idle application instances get to stop once the drain is over.
CLOSE_TIMEOUT_SECONDS = 5.0
# How long the cancelled heartbeat gets to finish a state publish before the withdrawal.
BEAT_STOP_TIMEOUT_SECONDS = 1.0
# How long one probe of the layer may take, and the pause between probes at start.
LAYER_PROBE_TIMEOUT_SECONDS = 5.0
LAYER_RETRY_SECONDS = 1.0
# How long a starting worker waits for its layer (WORKER_LAYER_WAIT_SECONDS).
DEFAULT_LAYER_WAIT_SECONDS = 30.0


class LayerUnreachable(RuntimeError):
    """The channel layer did not answer a starting worker in time."""


class LayerComplaints(logging.Handler):
    """Keeps the last warning the layer's code logged (``channels_kit.layers``): a probe that
    times out learns why from it (the layer retries its errors and logs them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        # The error itself, whose repr (in the message) may say little: redis-py 8's does.
        errors = [f"{type(a).__name__}: {a}" for a in args if isinstance(a, BaseException) and str(a)]
        self.last = record.getMessage() + "".join(f" [{error}]" for error in errors)


class KitWorker(Worker):
    """A Channels ``Worker`` with bounded prefetch, SIGTERM drain, counters and a heartbeat.

    Each channel gets ``concurrency`` slots (``channel_concurrency`` overrides it per
    channel); a slot takes the next message only when its instance is idle, so at
    most that many messages per channel are out of the layer in this process.
    Channels in ``relay_channels`` (relay mode's ``http.request`` and ``websocket.*``)
    get ``RelaySlot``s that run each message through ``relay_handler``; with ``held``
    (``HeldMessages``), a relay message still running after its release time (a long-poll)
    frees its slot for the next one, so a few held requests cannot starve the rest.
    A worker opens no port, so its healthcheck reads the heartbeat file's age: a
    fresh file proves the loop is turning and the layer answers (``python -m
    channels_kit.observe.probe heartbeat``).
    On a layer that shares worker state (Redis) the heartbeat also publishes the worker's
    state (channels, busy, counters) for ``channels_status`` and the metrics
    (``channels_kit.observe.worker_state``).
    """

    def __init__(
        self,
        application: Any,
        channels: Iterable[str],
        channel_layer: ChannelLayer,
        *,
        concurrency: int = 1,
        channel_concurrency: Mapping[str, int] | None = None,
        relay_handler: Handler | None = None,
        relay_channels: Collection[str] = (),
        grace_period: float = 25.0,
        heartbeat_path: Path | None = None,
        heartbeat_interval: float = 5.0,
        publish_state: bool = True,
        layer_wait: float | None = DEFAULT_LAYER_WAIT_SECONDS,
        held: HeldMessages | None = None,
        mode_guard: ModeGuard | None = None,
    ) -> None:
        super().__init__(application=application, channels=list(channels), channel_layer=channel_layer)
        overrides = channel_concurrency or {}
        self.concurrency = {channel: overrides.get(channel, concurrency) for channel in self.channels}
        for channel, count in self.concurrency.items():
            if count < 1:
                raise ValueError(f"concurrency of {channel} must be at least 1, not {count}")
        if not (math.isfinite(grace_period) and grace_period >= 0):
            raise ValueError(f"grace_period must not be negative, not {grace_period}")
        if layer_wait is not None and not (math.isfinite(layer_wait) and layer_wait >= 0):
            raise ValueError(f"layer_wait must not be negative (None: no wait), not {layer_wait}")
        if not (math.isfinite(heartbeat_interval) and heartbeat_interval > 0):
            raise ValueError(f"heartbeat_interval must be above 0, not {heartbeat_interval}")
        relayed = set(relay_channels) & set(self.channels)
        if relayed and relay_handler is None:
            raise ValueError(f"relay channels {sorted(relayed)} need a relay_handler")
        self.grace_period = grace_period
        # Relay messages released from their slots (long-polls, slow events); None: none are.
        self.held = held
        # Not in relay mode: looks for relay interfaces beside this worker (start, heartbeats).
        self.mode_guard = mode_guard
        self.mode_conflict: str | None = None
        self.heartbeat_path = heartbeat_path
        self.heartbeat_interval = heartbeat_interval
        self.layer_wait = layer_wait
        # The layer answered the last probe; the channel the probes use (made on first use).
        self.layer_answers = False
        self._probe_channel: str | None = None
        self._complaints = LayerComplaints()
        self.stats = {channel: ChannelStats() for channel in self.channels}
        self.slots: list[Slot] = []
        for channel in self.channels:
            shared = {"channel": channel, "channel_layer": channel_layer, "stats": self.stats[channel]}
            for index in range(self.concurrency[channel]):
                if channel in relayed:
                    slot = RelaySlot(index=index, handler=relay_handler, held=held, **shared)
                else:
                    slot = ConsumerSlot(
                        index=index, application=application, send=self._send_for(channel), **shared
                    )
                self.slots.append(slot)
        # Descriptions of the messages given up on at the deadline or a second signal.
        self.abandoned: list[str] = []
        self._stop = asyncio.Event()
        self._abandon = asyncio.Event()
        inspector = inspector_for(channel_layer) if publish_state else None
        self.state_publisher = (
            WorkerStatePublisher(inspector, self, heartbeat_interval=heartbeat_interval)
            if inspector is not None and inspector.shares_worker_state
            else None
        )
        # The event loop serving, while handle() runs: the metrics thread runs coroutines on it.
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- state for healthchecks and metrics ----------------------------------------

    def busy_count(self, channel: str | None = None) -> int:
        """Messages taken from the layer and not finished yet (for one channel, or all)."""
        return sum(slot.running() for slot in self.slots if channel in (None, slot.channel))

    def held_count(self, channel: str | None = None) -> int:
        """Of those, relay messages released from their slots (long-polls, slow events)."""
        return sum(slot.held_count() for slot in self.slots if channel in (None, slot.channel))

    @property
    def messages_received(self) -> int:
        return sum(stats.received for stats in self.stats.values())

    @property
    def messages_handled(self) -> int:
        return sum(stats.handled for stats in self.stats.values())

    @property
    def messages_failed(self) -> int:
        return sum(stats.failed for stats in self.stats.values())

    # --- running and stopping ---------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """First call: drain (take nothing new, finish in-flight work). Second: abandon it now."""
        if not self._stop.is_set():
            logger.info(
                "%s: taking no new messages; %d in flight get up to %gs to finish",
                reason,
                self.busy_count(),
                self.grace_period,
            )
            self._stop.set()
        elif not self._abandon.is_set():
            logger.warning("%s again: abandoning in-flight work now", reason)
            self._abandon.set()

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, drain, return; exit at once if work was abandoned."""
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(self.arun(handle_signals=True))
            if self.abandoned:
                # Abandoned sync consumers keep running in threads that interpreter
                # shutdown would wait for; ending "at once" means skipping that.
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(EXIT_ABANDONED)

    async def arun(self, handle_signals: bool = False) -> None:
        """Serve until ``request_stop()`` (wired to SIGTERM/SIGINT when ``handle_signals``)."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            await self.handle()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def handle(self) -> None:
        """Wait for the layer, run every slot until a stop is requested or a listener fails,
        then drain."""
        self.loop = asyncio.get_running_loop()
        layer_logger = logging.getLogger("channels_kit.layers")
        layer_logger.addHandler(self._complaints)
        try:
            if not await self.wait_for_layer():
                return  # stopped before the layer answered: nothing was taken
            if self.mode_guard is not None:
                self.mode_conflict = await self.mode_guard.problem()
            if self.mode_conflict is None:
                await self._serve()
            if self.mode_conflict is not None:
                raise ModeMismatch(self.mode_conflict)
        finally:
            layer_logger.removeHandler(self._complaints)
            self.loop = None

    async def _serve(self) -> None:
        beating = self.heartbeat_path or self.state_publisher
        beat = asyncio.ensure_future(self.heartbeat()) if beating else None
        logger.info(
            "worker serving channels %s (grace period %gs, %s event loop)",
            ", ".join(f"{channel} x{self.concurrency[channel]}" for channel in self.channels),
            self.grace_period,
            loop_kind(self.loop),
        )
        tasks = {asyncio.ensure_future(slot.run()): slot for slot in self.slots}
        stop = asyncio.ensure_future(self._stop.wait())
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait({*tasks, stop}, return_when=asyncio.FIRST_COMPLETED)
            failure = next(
                (t.exception() for t in done if t is not stop and not t.cancelled() and t.exception()), None
            )
            if failure is not None:
                # The layer is failing (Redis gone?): finish what we hold, then let the
                # process exit non-zero so its supervisor restarts it.
                logger.error("a channel listener failed (%r); draining before exiting", failure)
            self._stop.set()
            await self._drain(tasks)
        finally:
            stop.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            timeout = 0 if self.abandoned else CLOSE_TIMEOUT_SECONDS
            await asyncio.gather(*(slot.close(timeout) for slot in self.slots))
            if beat:
                beat.cancel()
                # Let a publish still in flight finish first, so it cannot land after the
                # withdrawal; bounded, because a cancelled task is not bound to end.
                await asyncio.wait({beat}, timeout=BEAT_STOP_TIMEOUT_SECONDS)
            if self.state_publisher:
                await self.state_publisher.withdraw()
        if failure is not None:
            raise failure

    async def _drain(self, tasks: dict[asyncio.Future[None], Slot]) -> None:
        """Stop taking messages, hand back prefetched ones, wait for in-flight work (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_period

        def remaining() -> float:
            return max(0.0, deadline - loop.time())

        # The kit's layer guarantees a cancelled receive() loses no message.
        receiving = [r for r in (slot.stop_taking() for slot in self.slots) if r is not None]
        if receiving:
            await asyncio.wait(receiving, timeout=remaining())
        await self._requeue_pending(remaining())

        pending = {task for task in tasks if not task.done()}
        if pending:
            logger.info("waiting up to %.0fs for %d in-flight message(s)", remaining(), self.busy_count())
        abandon = asyncio.ensure_future(self._abandon.wait())
        try:
            while pending and not abandon.done():
                done, _ = await asyncio.wait(
                    {*pending, abandon}, timeout=remaining(), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    break  # the deadline passed
                pending -= done
        finally:
            abandon.cancel()
        if self.busy_count():
            why = "second signal" if self._abandon.is_set() else f"grace period ({self.grace_period:g}s) over"
            self.abandoned = [slot.describe_in_flight() for slot in self.slots if slot.busy]
            logger.error(
                "%s: abandoning %d in-flight message(s): %s",
                why,
                len(self.abandoned),
                "; ".join(self.abandoned),
            )
        else:
            logger.info(
                "drained: %d message(s) handled, %d failed; exiting",
                self.messages_handled,
                self.messages_failed,
            )

    async def _requeue_pending(self, timeout: float) -> None:
        """On a ``DrainableLayer``, hand back what the layer fetched but did not deliver,
        for other workers."""
        if not isinstance(self.channel_layer, DrainableLayer):
            return
        try:
            async with asyncio.timeout(timeout):
                await self.channel_layer.requeue_pending()
        except Exception:
            logger.exception("the channel layer's requeue_pending() failed; prefetched messages may be lost")

    def _send_for(self, channel: str) -> Send:
        scope = {"type": "channel", "channel": channel}

        async def send(message: dict) -> None:
            await self.application_send(scope, message)

        return send

    # --- the layer answers: the start-up wait and the heartbeat ------------------------

    def describe_layer(self) -> str:
        """The layer's servers, passwords masked, for messages (its class when it has none)."""
        return ", ".join(layer_servers(self.channel_layer)) or backend_name(self.channel_layer)

    async def probe_layer(self) -> str | None:
        """Send a message to a channel of this worker's own and receive it back, within
        ``LAYER_PROBE_TIMEOUT_SECONDS``; None when the layer answered, else why not."""
        self._complaints.last = ""
        token = uuid.uuid4().hex
        try:
            async with asyncio.timeout(LAYER_PROBE_TIMEOUT_SECONDS):
                if self._probe_channel is None:
                    self._probe_channel = await self.channel_layer.new_channel("kit.probe")
                await self.channel_layer.send(self._probe_channel, {"type": "kit.probe", "token": token})
                while (await self.channel_layer.receive(self._probe_channel)).get("token") != token:
                    pass  # an earlier probe's, answered late
        except TimeoutError:
            said = f"; the layer said: {self._complaints.last}" if self._complaints.last else ""
            return f"no answer within {LAYER_PROBE_TIMEOUT_SECONDS:g} s{said}"
        except Exception as exc:  # noqa: BLE001 - any failure means "does not answer"
            return f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
        return None

    async def wait_for_layer(self) -> bool:
        """Probe the layer until it answers (True), a stop is requested (False) or
        ``layer_wait`` seconds pass (``LayerUnreachable``). No wait when ``layer_wait`` is None."""
        if self.heartbeat_path:
            # A file left by an earlier run would look fresh before this one serves.
            self.heartbeat_path.unlink(missing_ok=True)
        if self.layer_wait is None:
            self.layer_answers = True
            return True
        deadline = self.loop.time() + self.layer_wait
        logged = False
        while not self._stop.is_set():
            problem = await self.probe_layer()
            if problem is None:
                self.layer_answers = True
                if logged:
                    logger.info("the channel layer (%s) answers", self.describe_layer())
                return True
            if self.loop.time() >= deadline:
                raise LayerUnreachable(
                    f"the channel layer ({self.describe_layer()}) did not answer within "
                    f"{self.layer_wait:g} s (WORKER_LAYER_WAIT_SECONDS): {problem}"
                )
            if not logged:
                logged = True
                logger.warning(
                    "waiting up to %g s for the channel layer (%s): %s",
                    self.layer_wait,
                    self.describe_layer(),
                    problem,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), LAYER_RETRY_SECONDS)
        return False

    async def _check_layer(self) -> None:
        """One heartbeat's probe; logs when the layer stops answering and when it answers again."""
        problem = await self.probe_layer()
        if problem is None and not self.layer_answers:
            logger.warning("the channel layer (%s) answers again; heartbeat resumed", self.describe_layer())
        elif problem is not None and self.layer_answers:
            logger.error(
                "the channel layer (%s) does not answer (%s): heartbeat stopped, retrying",
                self.describe_layer(),
                problem,
            )
        self.layer_answers = problem is None

    async def heartbeat(self) -> None:
        """Every ``heartbeat_interval`` seconds, forever: probe the layer (not while draining),
        touch ``heartbeat_path`` when it answered, publish the state."""
        if self.heartbeat_path:
            self.heartbeat_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            if self.heartbeat_path and self.layer_wait is not None and not self._stop.is_set():
                await self._check_layer()
            if self.heartbeat_path and self.layer_answers:
                self.heartbeat_path.touch()
            if self.state_publisher:
                # Bounded, so a slow Redis cannot stall the heartbeat file (the healthcheck).
                await self.state_publisher.publish_safely(timeout=self.heartbeat_interval)
            if self.mode_guard is not None and self.mode_conflict is None and not self._stop.is_set():
                self.mode_conflict = await self.mode_guard.problem()
                if self.mode_conflict is not None:
                    logger.error("stopping: %s", self.mode_conflict)
                    self.request_stop("relay interfaces beside a worker in another mode")
            await asyncio.sleep(self.heartbeat_interval)
