"""The kit's Redis channel layer: channels_redis, sharded for real and safe when idle.

``RedisChannelLayer`` extends channels_redis's layer where it falls short of the
seed's "Scaling Up" promise:

- **Consistent hashing.** ``!`` (single-reader) channels and groups are placed
  on shards by a hash ring with virtual nodes (``hashring.HashRing``), so adding
  a shard moves few of them. channels_redis cuts a 12-bit CRC range into equal
  slices instead, which moves most keys, and it hashes a ``!`` channel's full
  name on send but only its prefix on receive, so with two or more shards
  direct sends to a ``!`` channel can land on a shard nobody reads.
- **No stranded messages.** Sends to a general channel are spread over all
  shards; a receiver waits on every shard at once. channels_redis's receiver
  polls one shard until something arrives there, while the messages on the
  other shards expire unread.
- **Capacity over all shards.** A general channel is full when it holds its
  capacity in total, not per shard; each send is one atomic script.
- **Redis restarts.** A pooled connection that Redis closed (restart, failover,
  ``CLIENT KILL``) is replaced and the command retried, instead of failing the
  request that happened to draw it.
- **Batched reads.** A process's own (``!``) channels are read up to 64 messages per
  round trip (``BZMPOP``, Redis 7), a general channel up to as many as wait for it.
- **Idle survival.** redis-py 8 gives every connection a 5 s socket timeout by
  default, while channels_redis blocks in ``BZPOPMIN`` for 5 s on an idle
  channel, so an idle ``receive()`` dies with ``TimeoutError``
  (redis/redis-py#4091). Blocking reads here stay below half the socket timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import channels_redis.core
import redis.exceptions
from channels.exceptions import ChannelFull
from channels_redis.utils import create_pool
from redis.asyncio import connection as redis_connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from channels_kit.hashring import HashRing

logger = logging.getLogger(__name__)

# What redis-py uses when neither the host dict nor the URL sets a timeout.
REDIS_DEFAULT_SOCKET_TIMEOUT: float | None = getattr(
    redis_connection, "DEFAULT_SOCKET_TIMEOUT", None
)
# A blocking read may use at most this share of the socket timeout, leaving the
# rest for the round trip on a busy network or a slow Redis.
BLOCKING_SHARE = 0.5
MIN_BLOCKING_TIMEOUT = 0.1
# Attempts to reconnect and re-run a command after Redis closed its connection.
RECONNECT_RETRIES = 3
# Messages one blocking read of a process's own ('!') channels may take (BZMPOP, Redis 7):
# a backlog of replies costs one round trip, not one per message.
SPECIFIC_BATCH = 64


def host_socket_timeout(host: Mapping[str, Any]) -> float | None:
    """The socket timeout one decoded channels_redis host entry will get (None: no timeout)."""
    if "socket_timeout" in host:
        value = host["socket_timeout"]
        return None if value is None else float(value)
    address = host.get("address")
    if isinstance(address, str):
        query = parse_qs(urlsplit(address).query)
        if "socket_timeout" in query:
            return float(query["socket_timeout"][-1])
    return REDIS_DEFAULT_SOCKET_TIMEOUT


def blocking_timeout_for(
    hosts: Iterable[Mapping[str, Any]], preferred: float
) -> float:
    """The longest blocking-read timeout that stays safely under every host's socket timeout."""
    timeouts = [t for t in (host_socket_timeout(h) for h in hosts) if t is not None]
    if not timeouts:
        return preferred
    return max(MIN_BLOCKING_TIMEOUT, min(preferred, min(timeouts) * BLOCKING_SHARE))




def shard_name(host: Mapping[str, Any]) -> str:
    """A stable name for a shard, so the hash ring does not depend on the order of ``hosts``."""
    if "address" in host:
        return str(host["address"])
    if "master_name" in host:
        return f"sentinel:{host['master_name']}"
    return f"{host.get('host', 'localhost')}:{host.get('port', 6379)}/{host.get('db', 0)}"


# Trim expired messages, refuse when full, append, refresh the key's TTL: one round trip.
SEND_SCRIPT = """
local now = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - expiry)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
    return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(expiry))
return 1
"""


class _ShardReader:
    """Blocking reads of one Redis key on one or more shards, for one event loop.

    A poller per shard blocks in ``BZMPOP``/``BZPOPMIN`` while someone waits. Pollers are
    never cancelled mid-read, because a read cancelled after Redis popped the
    message would lose it: ``receive()`` callers cancel their own wait instead,
    and whatever the pollers fetch meanwhile is kept for the next ``receive()``
    (or put back by ``RedisChannelLayer.requeue_pending``).
    """

    def __init__(self, layer: RedisChannelLayer, key: str, shards: list[int]) -> None:
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
        connection = self.layer.connection(index)
        try:
            while self.wanted():
                batch = await self.layer.pop_batch(connection, self.key, self.batch_size())
                horizon = time.time() - self.layer.expiry
                for member, score in batch:
                    if score < horizon:
                        continue  # expired while queued: dropped, as channels_redis would
                    self.deliver(member, score, index)
        except Exception as exc:  # noqa: BLE001 - handed to a waiter, which raises it
            self.fail(exc)

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


class _GeneralChannelReader(_ShardReader):
    """A general channel, read from every shard at once; each message goes to one waiter.

    Pollers read only while waiters outnumber fetched messages, so a process
    holds at most one surplus message per shard.
    """

    def __init__(self, layer: RedisChannelLayer, channel: str) -> None:
        super().__init__(layer, layer.prefix + channel, list(range(layer.ring_size)))
        self.fetched: asyncio.Queue = asyncio.Queue()
        self.waiting = 0

    def wanted(self) -> bool:
        return not self.closing and self.waiting > self.fetched.qsize()

    def batch_size(self) -> int:
        # No more than the waiters can take at once: the rest stays in Redis for other workers.
        return max(1, self.waiting - self.fetched.qsize())

    def deliver(self, member: bytes, score: float, index: int) -> None:
        self.fetched.put_nowait((member, score, index))

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


class _SpecificChannelReader(_ShardReader):
    """The ``!`` channels of this process sharing one non-local name, on their ring shard.

    Only this process reads them, so the poller fetches while anyone waits and
    routes each message to its channel's queue. Messages for a channel nobody is
    waiting on are kept until they expire, then dropped.
    """

    def __init__(self, layer: RedisChannelLayer, non_local_name: str) -> None:
        super().__init__(layer, layer.prefix + non_local_name, [layer.consistent_hash(non_local_name)])
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


class RedisChannelLayer(channels_redis.core.RedisChannelLayer):
    """channels_redis's layer with consistent hashing, all-shard receives and idle-safe reads."""

    def __init__(self, hosts: Any = None, **kwargs: Any) -> None:
        super().__init__(hosts=hosts, **kwargs)
        self.brpop_timeout = blocking_timeout_for(self.hosts, preferred=self.brpop_timeout)
        self.ring = HashRing([shard_name(host) for host in self.hosts])
        self._readers: dict[tuple[asyncio.AbstractEventLoop, str], _ShardReader] = {}
        self._bzmpop: bool | None = None  # whether the servers know BZMPOP (None: not tried yet)

    async def pop_batch(self, connection: Any, key: str, count: int) -> list[tuple[bytes, float]]:
        """Up to ``count`` of ``key``'s oldest messages, waiting at most one blocking timeout.

        BZMPOP (Redis 7) takes them in one round trip; older servers get BZPOPMIN, one at a time.
        """
        if count > 1 and self._bzmpop is not False:
            try:
                result = await connection.bzmpop(self.brpop_timeout, 1, [key], min=True, count=count)
            except redis.exceptions.ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                logger.info("this Redis has no BZMPOP (before 7.0): reading one message at a time")
                self._bzmpop = False
            else:
                self._bzmpop = True
                return [] if result is None else [(member, float(score)) for member, score in result[1]]
        result = await connection.bzpopmin(key, timeout=self.brpop_timeout)
        return [] if result is None else [(result[1], float(result[2]))]

    def create_pool(self, index: int) -> Any:
        """channels_redis's pool, retrying a command on a fresh connection when Redis closed the old one."""
        host = dict(self.hosts[index])
        host.setdefault("retry", Retry(ExponentialBackoff(cap=1.0, base=0.05), RECONNECT_RETRIES))
        host.setdefault("retry_on_error", [redis.exceptions.ConnectionError])
        return create_pool(host)

    # --- placement ---------------------------------------------------------------

    def consistent_hash(self, value: str | bytes) -> int:
        """The shard of a ``!`` channel (by its non-local part, on send and receive alike) or group."""
        if isinstance(value, bytes):
            value = value.decode("utf8")
        if "!" in value:
            value = self.non_local_name(value)
        return self.ring.index_for(value)

    def _shards_for_send(self, channel: str) -> list[int]:
        if "!" in channel:
            return [self.consistent_hash(channel)]
        first = next(self._send_index_generator)
        return [(first + offset) % self.ring_size for offset in range(self.ring_size)]

    def _shard_capacity(self, channel: str, index: int) -> int:
        """A ``!`` channel's shard holds its whole capacity; a general channel's is split exactly."""
        capacity = self.get_capacity(channel)
        if "!" in channel:
            return capacity
        share, remainder = divmod(capacity, self.ring_size)
        return share + (1 if index < remainder else 0)

    # --- channel layer API -------------------------------------------------------

    async def send(self, channel: str, message: dict) -> None:
        """Send to a channel; raises ``ChannelFull`` when it holds its capacity on every shard."""
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        if "!" in channel:
            message = {**message, "__asgi_channel__": channel}
        key = self.prefix + self.non_local_name(channel)
        data = self.serialize(message)
        for index in self._shards_for_send(channel):
            capacity = self._shard_capacity(channel, index)
            accepted = capacity > 0 and await self.connection(index).eval(
                SEND_SCRIPT, 1, key, data, time.time(), self.expiry, capacity
            )
            if accepted:
                return
        raise ChannelFull()

    async def receive(self, channel: str) -> dict:
        """Receive the next message of a channel; cancelling the wait never loses a message."""
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        if "!" in channel:
            non_local_name = self.non_local_name(channel)
            assert non_local_name.endswith(self.client_prefix + "!"), "Wrong client prefix"
            return await self._reader(_SpecificChannelReader, non_local_name).receive(channel)
        return (await self.receive_single(channel))[1]

    async def receive_single(self, channel: str) -> tuple[str, dict]:
        if "!" in channel:
            return await super().receive_single(channel)
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        message = self.deserialize(await self._reader(_GeneralChannelReader, channel).receive())
        message.pop("__asgi_channel__", None)
        return channel, message

    def _reader(self, kind: type[_ShardReader], name: str) -> Any:
        # Sync code (async_to_sync under WSGI) may run each call in a new event loop:
        # forget the readers of loops that are gone.
        for gone in [k for k in self._readers if k[0].is_closed()]:
            del self._readers[gone]
        key = (asyncio.get_running_loop(), name)
        reader = self._readers.get(key)
        if reader is None or reader.closing:
            reader = self._readers[key] = kind(self, name)
        return reader

    def _readers_of_this_loop(self) -> list[_ShardReader]:
        loop = asyncio.get_running_loop()
        return [self._readers.pop(key) for key in [k for k in self._readers if k[0] is loop]]

    async def requeue_pending(self) -> int:
        """Stop receiving in this event loop; put fetched, undelivered general-channel messages back.

        For a graceful worker shutdown: once its ``receive()`` calls are cancelled,
        nothing this process took from Redis is lost. Returns how many went back.
        """
        requeued = 0
        for reader in self._readers_of_this_loop():
            await reader.stop()
            if not isinstance(reader, _GeneralChannelReader):
                continue  # a '!' channel's messages belong to this (departing) process
            for member, score, index in reader.take_unreceived():
                connection = self.connection(index)
                await connection.zadd(reader.key, {member: score})
                await connection.expire(reader.key, math.ceil(self.expiry))
                requeued += 1
        if requeued:
            logger.info("requeued %d fetched but undelivered message(s)", requeued)
        return requeued

    async def close_pools(self) -> None:
        for reader in self._readers_of_this_loop():
            await reader.abort()
        await super().close_pools()
