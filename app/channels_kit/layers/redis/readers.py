"""Blocking reads of the kit's Redis layer: per event loop, per key, never cancelled mid-read.

A read cancelled after Redis popped a message would lose it, so the pollers here are
never cancelled while they read: ``receive()`` callers cancel their own wait instead,
and whatever the pollers fetch meanwhile is kept for the next ``receive()`` (or, once
the process drains, put back for other processes: ``RedisChannelLayer.requeue_pending``).
"""

from __future__ import annotations

import asyncio
import math
import time

from channels_kit.layers.redis.outages import MAX_RETRY_SECONDS, OUTAGE_ERRORS, RETRY_SECONDS, ShardedLayer

# Messages one blocking read of a process's own ('!') channels may take (BZMPOP, Redis 7):
# a backlog of replies costs one round trip, not one per message.
SPECIFIC_BATCH = 64


class ShardReader:
    """Blocking reads of one Redis key on one or more shards, for one event loop.

    A poller per shard blocks in ``BZMPOP``/``BZPOPMIN`` while someone waits. Pollers are
    never cancelled mid-read, because a read cancelled after Redis popped the
    message would lose it: ``receive()`` callers cancel their own wait instead,
    and whatever the pollers fetch meanwhile is kept for the next ``receive()``
    (or put back by ``RedisChannelLayer.requeue_pending``).
    """

    def __init__(self, layer: ShardedLayer, key: str, shards: list[int]) -> None:
        self.layer = layer
        self.key = key
        self.shards = shards
        self.closing = False
        self.pollers: dict[int, asyncio.Task] = {}

    def wanted(self) -> bool:
        """Whether the pollers should read another message."""
        raise NotImplementedError

    def deliver(self, member: bytes, score: float, index: int) -> None:
        """Hand one fetched message to its waiter(s)."""
        raise NotImplementedError

    def fail(self, exc: Exception) -> None:
        """Hand a poller's error to a waiter, which raises it."""
        raise NotImplementedError

    def start_pollers(self) -> None:
        for index in self.shards:
            poller = self.pollers.get(index)
            if poller is None or poller.done():
                self.pollers[index] = asyncio.ensure_future(self._poll(index))

    def batch_size(self) -> int:
        """How many messages one read may take."""
        return 1

    async def _poll(self, index: int) -> None:
        connection = self.layer.blocking_connection(index)
        health = self.layer.health
        retry = RETRY_SECONDS
        task = asyncio.current_task()
        try:
            # A cancellation that got lost in redis-py (Python 3.11's wait_for) still ends the
            # poller: what the read fetched is delivered, and no other read starts.
            while self.wanted() and not (task is not None and task.cancelling()):
                if not health.usable(index):
                    # The shard is away (its probe says so): the waiters keep waiting (other
                    # shards may deliver), and this poller reads again as soon as it answers.
                    await health.wait_usable(index, MAX_RETRY_SECONDS)
                    continue
                try:
                    batch = await self.layer.pop_batch(connection, self.key, self.batch_size())
                except OUTAGE_ERRORS as error:
                    if health.usable(index):  # the first to notice, or the probe disagrees
                        health.failed(index, error)
                        await asyncio.sleep(retry)
                        retry = min(retry * 2, MAX_RETRY_SECONDS)
                    continue
                retry = RETRY_SECONDS
                health.answered(index)
                horizon = time.time() - self.layer.expiry
                for member, score in batch:
                    if score < horizon:
                        continue  # expired while queued: dropped, as channels_redis would
                    await self.keep(member, score, index)
        except Exception as exc:  # noqa: BLE001 - handed to a waiter, which raises it
            self.fail(exc)

    async def keep(self, member: bytes, score: float, index: int) -> None:
        """What a read fetched: for the waiters (``deliver``)."""
        self.deliver(member, score, index)

    async def stop(self) -> None:
        """Let the pollers finish their current read (at most one blocking timeout)."""
        self.closing = True
        pollers = [p for p in self.pollers.values() if not p.done()]
        if pollers:
            await asyncio.wait(pollers)

    async def abort(self) -> None:
        """Cancel the pollers at once (the data is being discarded anyway)."""
        self.closing = True
        for poller in self.pollers.values():
            poller.cancel()
        await asyncio.gather(*self.pollers.values(), return_exceptions=True)


class GeneralChannelReader(ShardReader):
    """A general channel, read from every shard at once; each message goes to one waiter.

    Pollers read only while waiters outnumber fetched messages, so a process
    holds at most one surplus message per shard.
    """

    def __init__(self, layer: ShardedLayer, channel: str) -> None:
        super().__init__(layer, layer.prefix + channel, list(range(layer.ring_size)))
        self.fetched: asyncio.Queue = asyncio.Queue()
        self.waiting = 0
        #: The outcome of each put-back of a message fetched while closing (False: refused).
        self.handed_back: list[bool] = []

    def wanted(self) -> bool:
        return not self.closing and self.waiting > self.fetched.qsize()

    def batch_size(self) -> int:
        # No more than the waiters can take at once: the rest stays in Redis for other workers.
        return max(1, self.waiting - self.fetched.qsize())

    def deliver(self, member: bytes, score: float, index: int) -> None:
        self.fetched.put_nowait((member, score, index))

    async def keep(self, member: bytes, score: float, index: int) -> None:
        """Once the process drains (``closing``), what its last read fetches goes straight back
        to Redis for the other workers: waiting for the other pollers' reads to end first
        held it up to a blocking timeout (the last ~1 s tail of a rolling deploy)."""
        if self.closing:
            self.handed_back.append(await self.layer.put_back(self.key, member, score, index))
        else:
            self.deliver(member, score, index)

    def fail(self, exc: Exception) -> None:
        self.fetched.put_nowait(exc)

    async def receive(self) -> bytes:
        """The next message of the channel, serialized."""
        self.waiting += 1
        try:
            if self.fetched.empty():
                self.start_pollers()
            item = await self.fetched.get()
        finally:
            self.waiting -= 1
        if isinstance(item, BaseException):
            raise item
        return item[0]

    def take_unreceived(self) -> list[tuple[bytes, float, int]]:
        """Remove and return what was fetched but never received."""
        left = []
        while not self.fetched.empty():
            item = self.fetched.get_nowait()
            if not isinstance(item, BaseException):
                left.append(item)
        return left


class SpecificChannelReader(ShardReader):
    """The ``!`` channels of this process sharing one non-local name, on their ring shard and
    its spare (where senders put them while the ring shard is away).

    Only this process reads them, so the poller fetches while anyone waits and
    routes each message to its channel's queue. Messages for a channel nobody is
    waiting on are kept until they expire, then dropped.
    """

    def __init__(self, layer: ShardedLayer, non_local_name: str) -> None:
        super().__init__(layer, layer.prefix + non_local_name, layer.specific_shards(non_local_name))
        self.queues: dict[str, asyncio.Queue] = {}
        self.waiting: dict[str, int] = {}
        self.last_prune = time.monotonic()

    def wanted(self) -> bool:
        return not self.closing and any(self.waiting.values())

    def batch_size(self) -> int:
        return SPECIFIC_BATCH  # all of it is this process's anyway

    def deliver(self, member: bytes, score: float, index: int) -> None:
        message = self.layer.deserialize(member)
        targets = message.pop("__asgi_channel__")
        deadline = score + self.layer.expiry
        for channel in targets if isinstance(targets, list) else [targets]:
            self.queues.setdefault(channel, asyncio.Queue()).put_nowait((deadline, dict(message)))
        self._prune()

    def fail(self, exc: Exception) -> None:
        for channel, count in self.waiting.items():
            if count:
                self.queues.setdefault(channel, asyncio.Queue()).put_nowait((math.inf, exc))
                return

    async def receive(self, channel: str) -> dict:
        """The next unexpired message of one ``!`` channel."""
        queue = self.queues.setdefault(channel, asyncio.Queue())
        self.waiting[channel] = self.waiting.get(channel, 0) + 1
        try:
            while True:
                if queue.empty():
                    self.start_pollers()
                deadline, item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if deadline >= time.time():
                    return item
        finally:
            self.waiting[channel] -= 1
            if not self.waiting[channel]:
                del self.waiting[channel]
                if queue.empty():
                    self.queues.pop(channel, None)

    def _prune(self) -> None:
        """Drop expired messages of channels nobody waits on (sockets gone), once per expiry."""
        if time.monotonic() - self.last_prune < self.layer.expiry:
            return
        self.last_prune = time.monotonic()
        now = time.time()
        for channel, queue in list(self.queues.items()):
            if self.waiting.get(channel):
                continue
            kept = [item for item in (queue.get_nowait() for _ in range(queue.qsize())) if item[0] >= now]
            if kept:
                for item in kept:
                    queue.put_nowait(item)
            else:
                del self.queues[channel]
