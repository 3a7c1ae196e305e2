"""A Redis shard that stops answering, and one that comes back empty.

- ``ShardHealth``: which shards failed lately. General sends skip a failed shard for a
  few seconds (another shard takes the message); a send to a ``!`` channel, which lives
  on one shard, waits for it (up to 30 s); readers of a failed shard wait and try again
  with backoff instead of failing their ``receive()``; every outage is logged once when
  it starts and once when it ends.
- ``Memberships``: the group memberships this process made. A shard that restarted has
  lost its data, group keys included: every couple of seconds each process checks a key
  of its own on every shard (``SET ... GET``), and when that key is gone it writes its
  memberships of that shard's groups back, with their original times (so group expiry
  is unchanged). Messages that were queued on the shard are lost with it.
- ``ShardedLayer``: what this module and ``readers`` use of the layer (``RedisChannelLayer``
  has it), so that neither imports ``layer``, which imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any, Protocol

import redis.exceptions
from redis.asyncio import Redis

logger = logging.getLogger(__name__)

# What an unreachable (stopped, restarting, partitioned) Redis server raises.
OUTAGE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
# How long general sends skip a shard after it failed, before trying it again.
SKIP_SECONDS = 2.0
# A shard that failed counts as down (metrics) until it answers, or until this long has
# passed without anyone here trying it again.
DOWN_SECONDS = 15.0
# A reader of a failed shard tries again after this long, doubling up to the maximum.
RETRY_SECONDS, MAX_RETRY_SECONDS = 0.5, 5.0
# How long a send to a '!' channel waits for its shard to come back before it raises.
SPECIFIC_SEND_WAIT_SECONDS = 30.0
# How often a process checks that no shard lost its memberships, and how long its marker lives.
CHECK_SECONDS = 2.0
MARKER_TTL_SECONDS = 60


class ShardHealth:
    """Which shards of one layer failed lately."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.skip_until = [0.0] * len(names)
        self.failing = [False] * len(names)
        self.last_failure = [0.0] * len(names)

    def down(self, index: int) -> bool:
        """Whether the shard failed lately and has not answered since (for metrics)."""
        return self.failing[index] and time.monotonic() - self.last_failure[index] < DOWN_SECONDS

    def usable(self, index: int) -> bool:
        """False for a few seconds after the shard failed."""
        return time.monotonic() >= self.skip_until[index]

    def failed(self, index: int, error: BaseException) -> None:
        self.last_failure[index] = time.monotonic()
        self.skip_until[index] = time.monotonic() + SKIP_SECONDS
        if not self.failing[index]:
            self.failing[index] = True
            logger.warning(
                "Redis shard %s is unreachable (%r): its share goes elsewhere", self.names[index], error
            )

    def answered(self, index: int) -> None:
        if self.failing[index]:
            self.failing[index] = False
            self.skip_until[index] = 0.0
            logger.warning("Redis shard %s answers again", self.names[index])


class ShardedLayer(Protocol):
    """What ``Memberships`` and the readers (``readers``) use of the kit's Redis layer."""

    prefix: str
    client_prefix: str
    ring_size: int
    expiry: float
    group_expiry: float
    health: ShardHealth

    def connection(self, index: int) -> Redis: ...

    def consistent_hash(self, value: str | bytes) -> int: ...

    def deserialize(self, message: bytes) -> dict[str, Any]: ...

    def _group_key(self, group: str) -> bytes: ...

    async def pop_batch(self, connection: Redis, key: str, count: int) -> list[tuple[bytes, float]]: ...


class Memberships:
    """The group memberships this process made, written back to a shard that lost them."""

    def __init__(self, layer: ShardedLayer) -> None:
        self.layer = layer
        self.added: dict[tuple[str, str], float] = {}  # (group, channel) -> time of group_add
        self.marker = f"{layer.prefix}kit:alive:{layer.client_prefix}"
        self.token = uuid.uuid4().hex
        self.marked = [False] * layer.ring_size
        self._task: asyncio.Task | None = None

    def add(self, group: str, channel: str) -> None:
        self.added[(group, channel)] = time.time()

    def discard(self, group: str, channel: str) -> None:
        self.added.pop((group, channel), None)

    def watch(self) -> None:
        """Check the shards from this event loop on (a server's: it receives here). A watcher
        left by an event loop that is closed now is replaced."""
        task = self._task
        if task is None or task.done() or task.get_loop().is_closed():
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        """Stop the watcher of this event loop (one of another, live loop ends with that loop)."""
        task = self._task
        if task is None:
            return
        loop = task.get_loop()
        if loop.is_closed() or task.done():
            self._task = None
        elif loop is asyncio.get_running_loop():
            self._task = None
            task.cancel()

    def _serves(self, task: asyncio.Task) -> bool:
        """Whether ``task`` should go on checking: memberships to keep, not stopped or replaced,
        and no cancellation requested. A cancellation can get lost on its way (Python 3.11's
        ``asyncio.wait_for``, inside redis-py's writes, returns the result of a write that
        finished as it was cancelled): the loop must end anyway, or ``asyncio.run()``, which
        cancels what is left when ``async_to_sync`` returns, waits for it forever."""
        return bool(self.added) and self._task is task and not task.cancelling()

    async def _run(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        while self._serves(task):
            for index in range(self.layer.ring_size):
                if not self._serves(task):
                    return
                await self.check(index)
            await asyncio.sleep(CHECK_SECONDS)

    async def check(self, index: int) -> int:
        """Mark the shard; when its mark was gone (it lost its data), write back the memberships
        of its groups. Returns how many were written back."""
        expired = time.time() - self.layer.group_expiry
        for key in [key for key, added in self.added.items() if added < expired]:
            del self.added[key]
        connection = self.layer.connection(index)
        writing_back = False
        try:
            before = await connection.set(self.marker, self.token, ex=MARKER_TTL_SECONDS, get=True)
            if before is not None or not self.marked[index]:
                self.marked[index] = True
                return 0
            writing_back = True
            mine = [
                (group, channel, added)
                for (group, channel), added in self.added.items()
                if self.layer.consistent_hash(group) == index
            ]
            async with connection.pipeline(transaction=False) as pipe:
                for group, channel, added in mine:
                    pipe.zadd(self.layer._group_key(group), {channel: added})
                    pipe.expire(self.layer._group_key(group), self.layer.group_expiry)
                await pipe.execute()
        except redis.exceptions.OutOfMemoryError:
            # The shard is at its maxmemory (noeviction). Refused while writing back: take the
            # new mark away again, so that the next round sees the data lost and tries again.
            if writing_back:
                with contextlib.suppress(redis.exceptions.RedisError, *OUTAGE_ERRORS):
                    await connection.delete(self.marker)
            return 0
        except OUTAGE_ERRORS as error:
            self.layer.health.failed(index, error)
            return 0
        self.layer.health.answered(index)
        if mine:
            logger.warning(
                "Redis shard %s lost its data: wrote back %d group membership(s) of this process",
                self.layer.health.names[index],
                len(mine),
            )
        return len(mine)
