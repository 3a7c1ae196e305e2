"""Time both halves of relay mode agree on: the channel layer server's clock.

An envelope's ``deadline`` and ``start_by`` are set by the interface server and judged
by the worker that takes the message. Judged on two hosts' own clocks, a skew between
them decides instead: a worker 10 s ahead dropped every message as stale (each event
waited for three resends), one 10 s behind ran an event its interface had already sent
again. So both sides read the time of the server they share, the layer's:

- **Redis**: the first shard's ``TIME``; **PostgreSQL**: ``clock_timestamp()``.
- **Same-host** (SQLite) layer and Channels' in-memory one: every process reads one
  kernel clock, this host's.
- **RabbitMQ** has no clock to read: both sides use their own, and the hosts' clocks must
  agree (NTP) to well within ``RELAY_RESEND_SECONDS``. Said once in the log.

Each process measures its offset to that clock once before its first relayed message
and every ``REFRESH_SECONDS`` after (in the background), keeping a sample only when its
round trip was short; ``now()`` is this host's clock plus the offset, so reading the time
never waits for the layer. A process whose layer does not answer keeps its last offset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from channels_kit.layers.base import ChannelLayer

logger = logging.getLogger(__name__)

# Seconds between two measurements of the offset.
REFRESH_SECONDS = 30.0
# A sample whose round trip took longer is dropped (its error is half the round trip).
MAX_ROUND_TRIP_SECONDS = 0.5
# How long the first measurement may hold up the first message.
FIRST_SAMPLE_TIMEOUT_SECONDS = 3.0

ServerTime = Callable[[], Awaitable[float]]


def _redis_time(layer: ChannelLayer) -> ServerTime | None:
    connection = getattr(layer, "connection", None)
    if connection is None or not getattr(layer, "hosts", None):
        return None

    async def read() -> float:
        seconds, micros = await connection(0).time()
        return seconds + micros / 1e6

    return read


def _postgres_time(layer: ChannelLayer) -> ServerTime | None:
    in_store = getattr(layer, "in_store", None)
    if in_store is None:
        return None

    async def read() -> float:
        def query(store) -> float:
            (now,) = store.db.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
            return float(now)

        return await in_store(query)

    return read


def server_time_of(layer: ChannelLayer) -> tuple[ServerTime | None, str]:
    """How to read ``layer``'s server clock, and what it is (None: this host's own clock)."""
    module = type(layer).__module__
    if module.startswith("channels_redis") or ".layers.redis" in module:
        return _redis_time(layer), "the Redis server's TIME"
    if ".layers.postgres" in module:
        return _postgres_time(layer), "the PostgreSQL server's clock"
    if ".layers.rabbitmq" in module:
        return None, "this host's clock (RabbitMQ has none to read: keep the hosts' clocks in sync)"
    return None, "this host's clock (every process of the layer runs on it)"


class LayerClock:
    """This host's clock, set to the channel layer server's (``now()``)."""

    def __init__(
        self, layer: ChannelLayer, refresh: float = REFRESH_SECONDS, wall: Callable[[], float] = time.time
    ) -> None:
        self.read_server, self.source = server_time_of(layer)
        self.wall = wall  # this host's clock
        self.refresh = refresh
        self.offset = 0.0  # server clock minus this host's
        self.samples = 0
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def now(self) -> float:
        """Unix time by the layer server's clock."""
        return self.wall() + self.offset

    async def ready(self) -> None:
        """Returns once the offset was measured (or could not be, within a few seconds);
        at once after the first time. Starts the background refresh."""
        if self.read_server is None:
            if self._ready is None:
                self._ready = asyncio.Event()
                logger.info("relay clock: %s", self.source)
            return
        if self._ready is None:
            self._ready = asyncio.Event()
            self._task = asyncio.ensure_future(self._run())
        if not self._ready.is_set():
            waiting = asyncio.ensure_future(self._ready.wait())
            await asyncio.wait({waiting}, timeout=FIRST_SAMPLE_TIMEOUT_SECONDS)
            waiting.cancel()
            self._ready.set()  # no sample in time: go on with the host's clock for now

    async def sample(self) -> bool:
        """Measure the offset once; True when the sample was kept."""
        assert self.read_server is not None
        started = time.monotonic()
        server = await self.read_server()
        round_trip = time.monotonic() - started
        if round_trip > MAX_ROUND_TRIP_SECONDS:
            return False
        offset = server - (self.wall() - round_trip / 2)
        if self.samples == 0 or abs(offset - self.offset) > 1.0:
            logger.info("relay clock: %s is %+.3f s from this host's", self.source, offset)
        self.offset = offset
        self.samples += 1
        return True

    async def _run(self) -> None:
        assert self._ready is not None
        while True:
            try:
                await asyncio.wait_for(self.sample(), FIRST_SAMPLE_TIMEOUT_SECONDS)
            except Exception as error:  # noqa: BLE001 - the last offset stays; tried again later
                kept = self.offset
                what = "relay clock: could not read %s (%r); keeping offset %+.3f s"
                logger.warning(what, self.source, error, kept)
            else:
                self._ready.set()
            await asyncio.sleep(self.refresh if self.samples else 1.0)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
