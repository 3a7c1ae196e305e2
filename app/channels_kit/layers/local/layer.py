"""``LocalChannelLayer``: a channel layer for the processes of one host, with no server.

Every process opens the same SQLite file (``store``); a send is one transaction, a
receive takes its message out of the file in another. Per event loop one poller fetches
for every waiting ``receive()`` at once: a general channel only as many messages as wait
for it, a process's own ``!`` channels all of theirs. The poller is never cancelled
mid-fetch, so a cancelled ``receive()`` loses nothing: what was fetched waits for the next
``receive()`` of its channel, or goes back to the file (``requeue_pending``, a stopping
worker). Other processes' sends are seen within ``max_poll`` seconds; this process's own
wake the poller at once.

A process killed while it holds fetched messages loses at most those: one per waiting
``receive()`` of a general channel, and the replies sent to its own ``!`` channels.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from channels_kit.layers.local.store import Row, Store

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PATH = Path(tempfile.gettempdir()) / "channels-kit-layer.sqlite3"
# Messages one fetch may take of a process's own ('!') channels: all of it is this process's.
SPECIFIC_BATCH = 64
# Poll intervals: from the shortest after a message, doubling while nothing arrives.
MIN_POLL_SECONDS = 0.001
# How often a process renews its sign of life and clears expired rows.
HOUSEKEEPING_SECONDS = 10.0


class _Reader:
    """Every ``receive()`` of one event loop, served by one poller."""

    def __init__(self, layer: LocalChannelLayer) -> None:
        self.layer = layer
        self.loop = asyncio.get_running_loop()
        # Per channel: fetched rows, or the poller's error for a waiter to raise.
        self.queues: dict[str, asyncio.Queue[Row | Exception]] = {}
        self.waiting: dict[str, int] = {}
        self.changed = asyncio.Event()
        self.closing = False
        self.poller: asyncio.Task[None] | None = None
        self.last_housekeeping = 0.0

    def poke(self) -> None:
        """Look again now (a send of this process may have reached a waiting channel)."""
        self.loop.call_soon_threadsafe(self.changed.set)

    async def receive(self, channel: str) -> dict[str, Any]:
        queue = self.queues.setdefault(channel, asyncio.Queue())
        self.waiting[channel] = self.waiting.get(channel, 0) + 1
        try:
            while True:
                if queue.empty():
                    self._start()
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                if item.expires > time.time():
                    return self.layer.deserialize(item.data)
        finally:
            self.waiting[channel] -= 1
            if not self.waiting[channel]:
                del self.waiting[channel]
                if queue.empty():
                    self.queues.pop(channel, None)

    def _start(self) -> None:
        self.changed.set()
        if not self.closing and (self.poller is None or self.poller.done()):
            self.poller = asyncio.ensure_future(self._poll())

    def _plan(self) -> list[tuple[str, int]]:
        """What to fetch now: (route, how many) for every channel someone waits on."""
        plan: dict[str, int] = {}
        for channel, waiters in self.waiting.items():
            if "!" in channel:
                plan[self.layer.non_local_name(channel)] = SPECIFIC_BATCH
            else:
                missing = waiters - self.queues[channel].qsize()
                if missing > 0:
                    plan[channel] = missing
        return list(plan.items())

    async def _poll(self) -> None:
        delay = MIN_POLL_SECONDS
        try:
            while not self.closing and self.waiting:
                self.changed.clear()
                now = time.time()
                if now - self.last_housekeeping > HOUSEKEEPING_SECONDS:
                    self.last_housekeeping = now
                    await self.layer.in_store(Store.mark_alive, now)
                    await self.layer.in_store(Store.purge_expired, now)
                plan = self._plan()
                taken = await self.layer.in_store(Store.take, self.layer.prefix, plan, now) if plan else {}
                for rows in taken.values():
                    for row in rows:
                        self.queues.setdefault(row.channel, asyncio.Queue()).put_nowait(row)
                unwanted = self._prune(now)
                if unwanted:
                    await self.layer.in_store(Store.put_back, self.layer.prefix, unwanted)
                if taken:
                    delay = MIN_POLL_SECONDS
                    continue
                try:
                    async with asyncio.timeout(delay):
                        await self.changed.wait()
                    delay = MIN_POLL_SECONDS
                except TimeoutError:
                    delay = min(delay * 2, self.layer.max_poll)
        except Exception as exc:  # handed to the waiters, which raise it
            logger.exception("reading the same-host channel layer failed")
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        for channel in list(self.waiting):
            self.queues[channel].put_nowait(exc)

    def _prune(self, now: float) -> list[tuple[str, str, Row]]:
        """Of the channels nobody waits on: hand back general-channel messages (for other
        processes to take) and forget expired ones (a '!' channel's socket gone)."""
        give_back = []
        for channel, queue in list(self.queues.items()):
            if channel in self.waiting:
                continue
            items = [queue.get_nowait() for _ in range(queue.qsize())]
            live = [item for item in items if isinstance(item, Row) and item.expires > now]
            if "!" not in channel:
                give_back.extend((channel, channel, row) for row in live)
                live = []
            if live:
                for row in live:
                    queue.put_nowait(row)
            else:
                del self.queues[channel]
        return give_back

    async def stop(self) -> None:
        """Let the poller finish its fetch (never cancelled mid-way: that would lose messages)."""
        self.closing = True
        self.changed.set()
        if self.poller is not None:
            await asyncio.wait({self.poller})

    def take_unreceived(self) -> list[tuple[str, str, Row]]:
        """General-channel messages fetched but never received, for the file again."""
        left = []
        for channel, queue in self.queues.items():
            while not queue.empty():
                item = queue.get_nowait()
                if "!" not in channel and isinstance(item, Row):
                    left.append((channel, channel, item))
        return left


class LocalChannelLayer(BaseChannelLayer):
    """A channel layer shared by the processes of one host through one SQLite file (no server)."""

    extensions = ["groups", "flush"]

    def __init__(
        self,
        path: str | Path | None = None,
        prefix: str = "asgi",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: dict | None = None,
        max_poll: float = 0.02,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.path = Path(path) if path else DEFAULT_PATH
        self.prefix = prefix
        self.group_expiry = group_expiry
        self.max_poll = max_poll
        self.client_prefix = uuid.uuid4().hex
        self._readers: dict[asyncio.AbstractEventLoop, _Reader] = {}
        self._pid: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._store: Store | None = None

    # --- the store, on a thread of this process's own ---------------------------------

    async def in_store(self, operation: Callable[..., T], *args: Any) -> T:
        """``operation(store, *args)`` on this process's connection, on its thread."""
        if self._pid != os.getpid():
            # A fresh process (or a forked one): its own thread and connection, never the parent's.
            self._pid, self._store = os.getpid(), None
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="channels-kit-local")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, operation, args)

    def _call(self, operation: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._store is None:
            self._store = Store(
                self.path, process_id=f"{os.uname().nodename}:{os.getpid()}:{self.client_prefix}"
            )
        return operation(self._store, *args)

    def serialize(self, message: dict[str, Any]) -> bytes:
        return msgpack.packb(message, use_bin_type=True)

    def deserialize(self, data: bytes) -> dict[str, Any]:
        return msgpack.unpackb(data, raw=False)

    def _reader(self) -> _Reader:
        for gone in [loop for loop in self._readers if loop.is_closed()]:
            del self._readers[gone]
        loop = asyncio.get_running_loop()
        reader = self._readers.get(loop)
        if reader is None or reader.closing:
            reader = self._readers[loop] = _Reader(self)
        return reader

    def _poke(self) -> None:
        """Wake this process's pollers: a send of its own may be what one of them waits for."""
        for reader in list(self._readers.values()):
            if not reader.loop.is_closed():
                reader.poke()

    # --- the channel layer API -----------------------------------------------------------

    async def send(self, channel: str, message: dict) -> None:
        """Send to a channel; ``ChannelFull`` when it holds its capacity."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        route, data, capacity = (
            self.non_local_name(channel),
            self.serialize(message),
            self.get_capacity(channel),
        )
        sent = await self.in_store(
            Store.send, self.prefix, route, channel, data, time.time(), self.expiry, capacity
        )
        if not sent:
            raise ChannelFull(channel)
        self._poke()

    async def receive(self, channel: str) -> dict:
        """The next message of ``channel``; cancelling the wait never loses a message."""
        self.require_valid_channel_name(channel)
        return await self._reader().receive(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.{self.client_prefix}!{uuid.uuid4().hex}"

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        expires = time.time() + self.group_expiry
        await self.in_store(Store.group_add, self.prefix, group, channel, expires)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self.in_store(Store.group_discard, self.prefix, group, channel)

    async def group_send(self, group: str, message: dict) -> None:
        """Send to every member of ``group``; members whose channel is full miss it."""
        self.require_valid_group_name(group)
        data = self.serialize(message)

        def send_to_members(store: Store) -> None:
            now = time.time()
            members = store.members(self.prefix, group, now)
            batch = [(self.non_local_name(c), c, data, self.get_capacity(c)) for c in members]
            store.send_many(self.prefix, batch, now, self.expiry)

        await self.in_store(send_to_members)
        self._poke()

    async def flush(self) -> None:
        await self.in_store(Store.flush, self.prefix)
        for reader in self._readers.values():
            reader.queues.clear()

    # --- worker shutdown and closing (DrainableLayer) -------------------------------------

    async def requeue_pending(self) -> int:
        """Stop receiving in this event loop; put fetched, undelivered general-channel messages back."""
        reader = self._readers.pop(asyncio.get_running_loop(), None)
        if reader is None:
            return 0
        await reader.stop()
        left = reader.take_unreceived()
        if not left:
            return 0
        count = await self.in_store(Store.put_back, self.prefix, left)
        logger.info("requeued %d fetched but undelivered message(s)", count)
        return count

    async def close(self) -> None:
        """Stop this event loop's reading and close this process's connection."""
        reader = self._readers.pop(asyncio.get_running_loop(), None)
        if reader is not None:
            await reader.stop()
        if self._executor is not None and self._pid == os.getpid():
            if self._store is not None:
                await self.in_store(Store.close)
                self._store = None
            self._executor.shutdown(wait=False)
            self._executor, self._pid = None, None
