"""A Redis shard that stops answering, and one that comes back empty.

- ``ShardHealth``: which shards failed lately. A failed shard is skipped at once until a
  probe (a ping every quarter second) finds it answering: general sends go to another
  shard, sends and group sends to a ``!`` channel of it go to its spare shard (which the
  channel's process reads too; both away: a send waits up to 30 s), readers of it wait
  instead of failing their ``receive()``; every outage is logged once when it starts and
  once when it ends. A hung shard (a paused or lost host: connections open and silent) is
  noticed by the command timeout (``timeouts``) and costs that once, not once per command.
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
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.exceptions
from redis.asyncio import Redis

logger = logging.getLogger(__name__)

# What an unreachable (stopped, restarting, partitioned, hung) Redis server raises.
OUTAGE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
# A shard that failed counts as down (metrics) until it answers, or until this long has
# passed without anyone here trying it again.
DOWN_SECONDS = 15.0
# A failed shard is probed this often (one ping, the command timeout) until it answers.
PROBE_SECONDS = 0.25
# Without a probe (no event loop to run one), a failed shard is tried again after this long.
SKIP_SECONDS = 2.0
# A reader of a shard that failed although the probe says it answers tries again after
# this long, doubling up to the maximum.
RETRY_SECONDS, MAX_RETRY_SECONDS = 0.5, 2.0
# How long a send to a '!' channel waits for its shard to come back before it raises.
SPECIFIC_SEND_WAIT_SECONDS = 30.0
# How long a group send waits for a replicated shard (Sentinel) that holds the group to fail
# over: Sentinel's down-after time, its election and the promotion (3-5 s measured with the
# compose stack's 2 s) fit well within it. A single server's group is not waited for.
FAILOVER_WAIT_SECONDS = 15.0
# How often a process checks that no shard lost its memberships, and how long its marker lives.
CHECK_SECONDS = 2.0
MARKER_TTL_SECONDS = 60


def describe(error: BaseException) -> str:
    """An error as a log line names it: its class and its message (a certificate refused,
    a password wrong, a timeout), not redis-py's short repr."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class ShardHealth:
    """Which shards failed lately. A shard that failed is skipped at once (fails fast) until a
    probe finds it answering: no send, group send or read waits on a hung shard's timeout
    twice. The first failure also drops the shard's idle pooled connections, which a lost host
    left dead (each would wait a whole timeout before the pool tried a new one)."""

    def __init__(
        self,
        names: list[str],
        probe: Callable[[int], Awaitable[Any]] | None = None,
        drop_idle: Callable[[int], Awaitable[Any]] | None = None,
    ) -> None:
        self.names = names
        self.probe = probe
        self.drop_idle = drop_idle
        self.failing = [False] * len(names)
        self.last_failure = [0.0] * len(names)
        self.last_error: list[str] = [""] * len(names)  # what the shard's last failure said
        self._probes: dict[tuple[asyncio.AbstractEventLoop, int], asyncio.Task] = {}

    def down(self, index: int) -> bool:
        """Whether the shard failed lately and has not answered since (for metrics)."""
        return self.failing[index] and time.monotonic() - self.last_failure[index] < DOWN_SECONDS

    def usable(self, index: int) -> bool:
        """Whether to ask the shard now: it has not failed, or answered since. While it is
        failing, a probe of this event loop checks it (started here when none runs)."""
        if not self.failing[index]:
            return True
        if self.probe is None or not self._ensure_probe(index):
            return time.monotonic() - self.last_failure[index] >= SKIP_SECONDS
        return False

    async def wait_usable(self, index: int, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until the shard is usable; whether it is."""
        deadline = time.monotonic() + timeout
        while not self.usable(index):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(PROBE_SECONDS / 2, max(0.0, deadline - time.monotonic())))
        return True

    def failed(self, index: int, error: BaseException) -> None:
        self.last_failure[index] = time.monotonic()
        self.last_error[index] = describe(error)
        if not self.failing[index]:
            self.failing[index] = True
            logger.warning(
                "Redis shard %s is unreachable (%s): its share goes elsewhere",
                self.names[index],
                self.last_error[index],
            )
        if self.probe is not None:
            self._ensure_probe(index, drop_idle=True)

    def answered(self, index: int) -> None:
        if self.failing[index]:
            self.failing[index] = False
            logger.warning("Redis shard %s answers again", self.names[index])

    def _ensure_probe(self, index: int, drop_idle: bool = False) -> bool:
        """A probe of the shard runs in this event loop (started if need be); False outside one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        for gone in [key for key, task in self._probes.items() if task.done() or key[0].is_closed()]:
            del self._probes[gone]
        if (loop, index) not in self._probes:
            self._probes[(loop, index)] = loop.create_task(self._probe(index, drop_idle))
        return True

    async def _probe(self, index: int, drop_idle: bool) -> None:
        """Ping the shard every ``PROBE_SECONDS`` until it answers (or the loop's pools close)."""
        assert self.probe is not None
        if drop_idle and self.drop_idle is not None:
            with contextlib.suppress(Exception):
                await self.drop_idle(index)
        while self.failing[index]:
            try:
                await self.probe(index)
            except OUTAGE_ERRORS as error:
                self.last_failure[index] = time.monotonic()
                self.last_error[index] = describe(error)
                await asyncio.sleep(PROBE_SECONDS)
                continue
            self.answered(index)

    async def stop_probes(self) -> None:
        """Cancel this event loop's probes (its pools are closing)."""
        loop = asyncio.get_running_loop()
        mine = [self._probes.pop(key) for key in [k for k in self._probes if k[0] is loop]]
        for task in mine:
            task.cancel()
        await asyncio.gather(*mine, return_exceptions=True)


class ShardedLayer(Protocol):
    """What ``Memberships`` and the readers (``readers``) use of the kit's Redis layer."""

    prefix: str
    client_prefix: str
    ring_size: int
    expiry: float
    group_expiry: float
    health: ShardHealth

    def connection(self, index: int) -> Redis: ...

    def blocking_connection(self, index: int) -> Redis: ...

    def consistent_hash(self, value: str | bytes) -> int: ...

    def specific_shards(self, channel: str) -> list[int]: ...

    def deserialize(self, message: bytes) -> dict[str, Any]: ...

    def _group_key(self, group: str) -> bytes: ...

    async def pop_batch(self, connection: Redis, key: str, count: int) -> list[tuple[bytes, float]]: ...

    async def put_back(self, key: str, member: bytes, score: float, index: int) -> bool: ...


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
        if not self.layer.health.usable(index):
            return 0  # its probe tells when it answers again
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
