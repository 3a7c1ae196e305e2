"""Queue figures and worker states of a Redis channel layer (the kit's or stock channels_redis's).

Each channel is a sorted set ``prefix + channel`` scored by send time, so a queue's
depth is its ``ZCARD`` and its oldest message is its lowest score. Keys are found with
``SCAN`` (bounded ``COUNT``, ``TYPE zset``) on every shard, never ``KEYS``, so a big
Redis is not blocked. Messages past the layer's expiry still count until the next send
trims them, so an oldest age above ``expiry`` means "stale", not "still waiting".

A worker's state is a small hash ``<prefix>:workers:<hostname>:<pid>`` on the shard the
layer's ``consistent_hash`` picks for that key, with a TTL: a worker that dies without
cleaning up vanishes on its own.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from typing import Any

from channels_redis.core import RedisChannelLayer as StockRedisChannelLayer

from channels_kit.layers.base import QueueFigures, WorkerState

# SCAN's COUNT hint: keys Redis looks at per call, so each call stays short.
SCAN_COUNT = 500
# Keys per pipeline when reading depths and worker hashes (bounds one reply's size).
BATCH = 500
# channels_redis's receive keeps a backup of each popped message under this suffix.
INFLIGHT_SUFFIX = "$inflight"
WORKERS_INFIX = ":workers:"


def decode(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode("utf8", "replace") if isinstance(value, bytes) else value


def escape_glob(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def channel_of_key(prefix: str, key: str) -> str | None:
    """The channel a sorted-set key holds, or None for the layer's other keys (groups, worker
    states: ``prefix:...``; channels_redis's ``$inflight`` backups). A ``!`` channel's key
    holds every channel of one process under its non-local name ``specific.<client>!``."""
    if not key.startswith(prefix):
        return None
    name = key[len(prefix) :]
    # A channel name cannot start with ':' (Channels' name rules), so this is the layer's own.
    if not name or name.startswith(":") or name.endswith(INFLIGHT_SUFFIX):
        return None
    return name


def state_to_hash(state: WorkerState) -> dict[str, str]:
    """A worker state as the fields of a Redis hash."""
    return {
        "host": state.host,
        "pid": str(state.pid),
        "channels": ",".join(state.channels),
        "busy": str(state.busy),
        "received": str(state.received),
        "handled": str(state.handled),
        "failed": str(state.failed),
        "started": repr(state.started),
        "updated": repr(state.updated),
    }


def state_from_hash(raw: Mapping[bytes | str, bytes | str]) -> WorkerState:
    """Parse a hash as Redis returns it (bytes); missing or garbled numbers read as 0."""
    fields = {decode(k): decode(v) for k, v in raw.items()}

    def number(name: str, kind: type = int) -> Any:
        try:
            return kind(fields.get(name, 0))
        except ValueError:
            return kind(0)

    return WorkerState(
        host=fields.get("host", "?"),
        pid=number("pid"),
        channels=tuple(c for c in fields.get("channels", "").split(",") if c),
        busy=number("busy"),
        received=number("received"),
        handled=number("handled"),
        failed=number("failed"),
        started=number("started", float),
        updated=number("updated", float),
    )


def _batches(items: list, size: int = BATCH) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RedisInspector:
    """The ``LayerInspector`` of channels_redis layers, the kit's sharded one included."""

    note = ""
    shares_worker_state = True

    def __init__(self, layer: StockRedisChannelLayer, scan_count: int = SCAN_COUNT) -> None:
        self.layer = layer
        self.shards = layer.ring_size
        self.prefix = layer.prefix
        self.scan_count = scan_count

    def worker_key(self, host: str, pid: int) -> str:
        return f"{self.prefix}{WORKERS_INFIX}{host}:{pid}"

    async def queue_figures(self, now: float) -> list[QueueFigures]:
        per_shard = await asyncio.gather(*(self._shard_queues(index, now) for index in range(self.shards)))
        return [queue for queues in per_shard for queue in queues]

    async def _shard_queues(self, index: int, now: float) -> list[QueueFigures]:
        connection = self.layer.connection(index)
        channel_keys = []
        pattern = escape_glob(self.prefix) + "*"
        async for raw in connection.scan_iter(match=pattern, count=self.scan_count, _type="zset"):
            channel = channel_of_key(self.prefix, decode(raw))
            if channel is not None:
                channel_keys.append((raw, channel))
        queues = []
        for batch in _batches(channel_keys):
            async with connection.pipeline(transaction=False) as pipe:
                for raw, _ in batch:
                    pipe.zcard(raw)
                    pipe.zrange(raw, 0, 0, withscores=True)
                replies = await pipe.execute()
            for (_, channel), depth, oldest in zip(batch, replies[0::2], replies[1::2], strict=True):
                if depth:  # the key may have emptied (and vanished) since SCAN saw it
                    age = max(0.0, now - oldest[0][1]) if oldest else 0.0
                    queues.append(QueueFigures(channel, index, int(depth), age))
        return queues

    async def worker_states(self) -> list[WorkerState]:
        per_shard = await asyncio.gather(*(self._shard_workers(index) for index in range(self.shards)))
        return [state for states in per_shard for state in states]

    async def _shard_workers(self, index: int) -> list[WorkerState]:
        connection = self.layer.connection(index)
        pattern = escape_glob(self.prefix + WORKERS_INFIX) + "*"
        keys = [raw async for raw in connection.scan_iter(match=pattern, count=self.scan_count, _type="hash")]
        states = []
        for batch in _batches(keys):
            async with connection.pipeline(transaction=False) as pipe:
                for raw in batch:
                    pipe.hgetall(raw)
                replies = await pipe.execute()
            states.extend(state_from_hash(reply) for reply in replies if reply)
        return states

    async def save_worker_state(self, state: WorkerState, ttl: float) -> None:
        key = self.worker_key(state.host, state.pid)
        async with self.layer.connection(self.layer.consistent_hash(key)).pipeline(transaction=True) as pipe:
            # DEL first: a restarted worker with the same identity never keeps stale fields.
            pipe.delete(key)
            pipe.hset(key, mapping=state_to_hash(state))
            # Milliseconds, so that sub-second heartbeats (tests) still get a TTL.
            pipe.pexpire(key, max(1, math.ceil(ttl * 1000)))
            await pipe.execute()

    async def delete_worker_state(self, host: str, pid: int) -> None:
        key = self.worker_key(host, pid)
        await self.layer.connection(self.layer.consistent_hash(key)).delete(key)

    async def close(self) -> None:
        await self.layer.close_pools()
