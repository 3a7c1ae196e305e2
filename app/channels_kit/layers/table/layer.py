"""``TableChannelLayer``: the Channels layer API over a table of messages that processes share.

A send is one call into the store; a receive takes its message out of the store in
another. Per event loop one poller fetches for every waiting ``receive()`` at once: a
general channel only as many messages as wait for it, a process's own ``!`` channels all
of theirs. The poller is never cancelled mid-fetch, so a cancelled ``receive()`` loses
nothing: what was fetched waits for the next ``receive()`` of its channel, or goes back to
the store (at once for a general channel nobody here waits on any more, or with
``requeue_pending`` when a worker stops).

How soon a poller sees another process's send is the subclass's business: the store is
polled (``max_poll`` at most between two looks), unless ``watch()`` says that a wake-up
on every send is in place (PostgreSQL's LISTEN), when it looks only every ``idle_poll``.
This process's own sends wake its pollers at once.

A process killed while it holds fetched messages loses at most those: one per waiting
``receive()`` of a general channel, and the replies sent to its own ``!`` channels.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

import msgpack
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from channels_kit.drops import dropped
from channels_kit.layers.table.store import MessageStore, Row

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Messages one fetch may take of a process's own ('!') channels: all of it is this process's.
SPECIFIC_BATCH = 64
# Poll intervals: from the shortest after a message, doubling while nothing arrives.
MIN_POLL_SECONDS = 0.001
# How often a process does the store's chores (expired rows, signs of life).
HOUSEKEEPING_SECONDS = 10.0
# After a store error the layer calls transient (a server restarting), the poller tries
# again after this long, doubling up to the maximum.
RETRY_SECONDS, MAX_RETRY_SECONDS = 0.5, 5.0


class _Reader:
    """Every ``receive()`` of one event loop, served by one poller."""

    def __init__(self, layer: TableChannelLayer) -> None:
        self.layer = layer
        self.loop = asyncio.get_running_loop()
        # Per channel: fetched rows, or the poller's error for a waiter to raise.
        self.queues: dict[str, asyncio.Queue[Row | Exception]] = {}
        self.waiting: dict[str, int] = {}
        #: The routes this reader fetches now (read by a subclass's wake-ups, on any thread).
        self.routes: frozenset[str] = frozenset()
        self.changed = asyncio.Event()
        self.closing = False
        self.poller: asyncio.Task[None] | None = None
        self.last_housekeeping = 0.0

    def poke(self) -> None:
        """Look again now (a send may have reached a waiting channel); any thread may call it."""
        if not self.loop.is_closed():
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
        # After the last waiter: give back, unless the store failed (the waiters raise it).
        while await self._poll_while_waited():
            if not await self._give_back_unwanted():
                return  # else a receive came while the rows went back: poll for it

    async def _poll_while_waited(self) -> bool:
        """Fetch while anyone waits; False when the store failed."""
        delay, retry = MIN_POLL_SECONDS, RETRY_SECONDS
        while not self.closing and self.waiting:
            self.changed.clear()
            try:
                took, woken = await self._fetch()
            except self.layer.transient_errors as exc:
                logger.warning("the channel layer's store is unreachable (%s); again in %.1f s", exc, retry)
                await asyncio.sleep(retry)
                retry = min(retry * 2, MAX_RETRY_SECONDS)
                continue
            except Exception as exc:  # handed to the waiters, which raise it
                logger.exception("reading the channel layer's store failed")
                self._fail(exc)
                return False
            retry = RETRY_SECONDS
            if took:
                delay = MIN_POLL_SECONDS
                continue
            try:
                async with asyncio.timeout(self.layer.idle_poll if woken else delay):
                    await self.changed.wait()
                delay = MIN_POLL_SECONDS
            except TimeoutError:
                delay = min(delay * 2, self.layer.max_poll)
        return True

    async def _give_back_unwanted(self) -> bool:
        """The last waiter left: what was fetched for it meanwhile goes back to the store at
        once (not at the next receive), for other processes to take and status to count.
        True when a receive came meanwhile (the poller goes on for it)."""
        if self.closing:
            return False
        try:
            await self._put_back_unwanted(time.time())
        except Exception:  # the rows expire; a stopping worker puts back the rest
            logger.exception("could not give fetched messages back to the store")
        return not self.closing and bool(self.waiting)

    async def _put_back_unwanted(self, now: float) -> None:
        """What was fetched for channels nobody waits on goes back to the store (``_prune``)."""
        unwanted = self._prune(now)
        if unwanted:
            await self.layer.in_store(lambda store: store.put_back(self.layer.prefix, unwanted))

    async def _fetch(self) -> tuple[bool, bool]:
        """One look at the store: take what the waiters want, give back what nobody wants.
        Returns whether anything was taken, and whether sends wake this reader."""
        layer, now = self.layer, time.time()
        if now - self.last_housekeeping > HOUSEKEEPING_SECONDS:
            await layer.in_store(lambda store: store.housekeeping(now))
            self.last_housekeeping = now
        plan = self._plan()
        self.routes = frozenset(route for route, _ in plan)
        woken = layer.watch(self.routes)
        taken = await layer.in_store(lambda store: store.take(layer.prefix, plan, now)) if plan else {}
        for rows in taken.values():
            for row in rows:
                self.queues.setdefault(row.channel, asyncio.Queue()).put_nowait(row)
        await self._put_back_unwanted(now)
        return bool(taken), woken

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
        """General-channel messages fetched but never received, for the store again."""
        left = []
        for channel, queue in self.queues.items():
            while not queue.empty():
                item = queue.get_nowait()
                if "!" not in channel and isinstance(item, Row):
                    left.append((channel, channel, item))
        return left


class TableChannelLayer(BaseChannelLayer):
    """A channel layer over a message table shared by processes; subclasses give the store."""

    extensions = ["groups", "flush"]
    #: Store errors after which the poller tries again (a server restarting) instead of
    #: handing the error to the waiting ``receive()`` calls.
    transient_errors: ClassVar[tuple[type[Exception], ...]] = ()

    def __init__(
        self,
        prefix: str = "asgi",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: dict | None = None,
        max_poll: float = 0.02,
        idle_poll: float = 1.0,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.prefix = prefix
        self.group_expiry = group_expiry
        self.max_poll = max_poll
        self.idle_poll = idle_poll
        self.client_prefix = uuid.uuid4().hex
        self._readers: dict[asyncio.AbstractEventLoop, _Reader] = {}
        self._pid: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._store: MessageStore | None = None

    # --- what a subclass provides ---------------------------------------------------------

    def open_store(self) -> MessageStore:
        """This process's connection to the store (called on the store's thread)."""
        raise NotImplementedError

    def watch(self, routes: Collection[str]) -> bool:
        """Ask for a wake-up of this process's pollers when a message reaches one of
        ``routes``; True once that is in place (the pollers then seldom look by themselves)."""
        return False

    # --- the store, on a thread of this process's own -------------------------------------

    async def in_store(self, operation: Callable[[MessageStore], T]) -> T:
        """``operation(store)`` on this process's connection, on the store's thread."""
        if self._pid != os.getpid():
            # A fresh process (or a forked one): its own thread and connection, never the parent's.
            self._pid, self._store = os.getpid(), None
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="channels-kit-store")
            self.forked()
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, operation)

    def forked(self) -> None:
        """This instance is used by a new process: drop what belonged to the one before."""

    def _call(self, operation: Callable[[MessageStore], T]) -> T:
        if self._store is None:
            self._store = self.open_store()
        try:
            return operation(self._store)
        except self.transient_errors:
            self._drop_store()
            raise

    def _drop_store(self) -> None:
        """Forget a connection that failed; the next call opens a new one."""
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:  # it is broken already
                logger.debug("closing a failed store connection failed too", exc_info=True)

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

    def poke(self, routes: Collection[str] | None = None) -> None:
        """Wake this process's pollers that fetch any of ``routes`` (all of them: None)."""
        for reader in list(self._readers.values()):
            if routes is None or not reader.routes.isdisjoint(routes):
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
        now = time.time()
        sent = await self.in_store(
            lambda store: store.send(self.prefix, route, channel, data, now, self.expiry, capacity)
        )
        if not sent:
            raise ChannelFull(channel)
        self.poke((route,))

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
        await self.in_store(lambda store: store.group_add(self.prefix, group, channel, expires))

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self.in_store(lambda store: store.group_discard(self.prefix, group, channel))

    async def group_send(self, group: str, message: dict) -> None:
        """Send to every member of ``group``; members whose channel is full miss it."""
        self.require_valid_group_name(group)
        data = self.serialize(message)
        routes: set[str] = set()
        missed = 0

        def send_to_members(store: MessageStore) -> None:
            nonlocal missed
            now = time.time()
            members = store.members(self.prefix, group, now)
            batch = [(self.non_local_name(c), c, data, self.get_capacity(c)) for c in members]
            routes.update(route for route, *_ in batch)
            missed = len(batch) - store.send_many(self.prefix, batch, now, self.expiry)

        await self.in_store(send_to_members)
        self.poke(routes)
        if missed:
            # The store says how many, not which: the group names them (WARNING, counted).
            dropped("group_send", "full", f"{missed} member channel(s) of group {group}", count=missed)

    async def flush(self) -> None:
        await self.in_store(lambda store: store.flush(self.prefix))
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
        count = await self.in_store(lambda store: store.put_back(self.prefix, left))
        logger.info("requeued %d fetched but undelivered message(s)", count)
        return count

    async def close(self) -> None:
        """Stop this event loop's reading and close this process's connection."""
        reader = self._readers.pop(asyncio.get_running_loop(), None)
        if reader is not None:
            await reader.stop()
        if self._executor is not None and self._pid == os.getpid():
            if self._store is not None:
                await self.in_store(lambda store: store.close())
                self._store = None
            self._executor.shutdown(wait=False)
            self._executor, self._pid = None, None
