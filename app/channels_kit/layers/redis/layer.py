"""The kit's Redis channel layer: channels_redis, sharded for real and safe when idle.

``RedisChannelLayer`` extends channels_redis's layer where it falls short of running
one channel layer over several Redis servers:

- **Consistent hashing.** ``!`` (single-reader) channels and groups are placed
  on shards by a hash ring with virtual nodes (``channels_kit.layers.hashring``), so
  adding a shard moves few of them. channels_redis cuts a 12-bit CRC range into equal
  slices instead, which moves most keys, and it hashes a ``!`` channel's full
  name on send but only its prefix on receive, so with two or more shards
  direct sends to a ``!`` channel can land on a shard nobody reads.
- **No stranded messages.** Sends to a general channel are spread over all
  shards; a receiver waits on every shard at once. channels_redis's receiver
  polls one shard until something arrives there, while the messages on the
  other shards expire unread.
- **Capacity over all shards.** A general channel is full when it holds its
  capacity in total, not per shard; each send is one atomic script.
- **Cancellation-safe receives** (``readers``): a cancelled ``receive()`` loses nothing.
- **Redis restarts.** A pooled connection that Redis closed (restart, failover,
  ``CLIENT KILL``) is replaced and the command retried, instead of failing the
  request that happened to draw it.
- **A shard down** (``outages``): general sends go to the other shards, readers of the
  down shard wait and try again while the others deliver; sends and group sends to a
  ``!`` channel whose shard is away go to its spare shard (the next one), which its
  process reads too; a shard that comes back empty gets this process's group memberships
  written back.
- **Batched reads.** A process's own (``!``) channels are read up to 64 messages per
  round trip (``BZMPOP``, Redis 7), a general channel up to as many as wait for it.
- **Idle survival** (``timeouts``): blocking reads stay below half the socket timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Mapping
from typing import Any, TypeVar

import channels_redis.core
import redis.asyncio
import redis.exceptions
from channels.exceptions import ChannelFull
from channels_redis.utils import create_pool
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from channels_kit.drops import DROPS, dropped
from channels_kit.layers.hashring import HashRing
from channels_kit.layers.redis.clocks import LATE, LateForDeadline, ShardClocks
from channels_kit.layers.redis.full import MemoryRefusals, out_of_memory
from channels_kit.layers.redis.outages import (
    FAILOVER_WAIT_SECONDS,
    MAX_RETRY_SECONDS,
    OUTAGE_ERRORS,
    PROBE_SECONDS,
    RETRY_SECONDS,
    SPECIFIC_SEND_WAIT_SECONDS,
    Memberships,
    ShardHealth,
)
from channels_kit.layers.redis.readers import GeneralChannelReader, ShardReader, SpecificChannelReader
from channels_kit.layers.redis.sentinel import is_sentinel_address, sentinel_pool
from channels_kit.layers.redis.timeouts import (
    DEFAULT_COMMAND_TIMEOUT,
    blocking_read_timeout,
    blocking_timeout_for,
    command_timeout_for,
    host_socket_timeout,
)

logger = logging.getLogger(__name__)

# Attempts to reconnect and re-run a command after Redis closed its connection.
RECONNECT_RETRIES = 3
# Connections of one process to one shard, and how long a command waits for a free one.
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_POOL_TIMEOUT = 20.0
# TCP keepalive of the layer's connections (Linux): an idle connection to a host that
# vanished is found dead after about 10 + 3 * 3 s, not at its next use.
KEEPALIVE_OPTIONS = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 3, "TCP_KEEPCNT": 3}

Reader = TypeVar("Reader", bound=ShardReader)


def shard_name(host: Mapping[str, Any]) -> str:
    """A stable name for a shard, so the hash ring does not depend on the order of ``hosts``."""
    if "address" in host:
        return str(host["address"])
    if "master_name" in host:
        return f"sentinel:{host['master_name']}"
    return f"{host.get('host', 'localhost')}:{host.get('port', 6379)}/{host.get('db', 0)}"


# Both send scripts start with this: past ``deadline`` (the shard's clock; 0: none) they write
# nothing and return -1 (``clocks.LATE``).
PAST_DEADLINE_LUA = """
if deadline > 0 then
    if redis.replicate_commands then redis.replicate_commands() end
    local clock = redis.call('TIME')
    if tonumber(clock[1]) + tonumber(clock[2]) / 1000000 > deadline then
        return -1
    end
end
"""

# Refuse when full (unexpired messages counted), append, trim expired messages, refresh the
# key's TTL: one round trip. The ZADD is the script's first write on purpose: a Redis at its
# maxmemory (noeviction) refuses a script only at its first write that may grow memory, and
# lets every write after any first write through (trimming first made a full Redis take it).
# A refused send trims the key's expired messages (deletions pass) and is tried once more.
# The bound of the count is formatted in full: Lua's default 14 digits are ~100 µs off.
# A send past its deadline (ARGV[5], in the shard's clock; 0: none) writes nothing and
# returns -1: the shard hung meanwhile, and the sender gave the message to another (clocks).
SEND_SCRIPT = (
    """
local deadline = tonumber(ARGV[5])
"""
    + PAST_DEADLINE_LUA
    + """local now = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local accepted = 0
if redis.call('ZCOUNT', KEYS[1], string.format('(%.17g', now - expiry), '+inf') < tonumber(ARGV[4]) then
    redis.call('ZADD', KEYS[1], now, ARGV[1])
    accepted = 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - expiry)
if accepted == 1 then
    redis.call('EXPIRE', KEYS[1], math.ceil(expiry))
end
return accepted
"""
)


# A group send on one shard: for each member channel under its capacity, append the message
# and refresh the key's TTL; then trim expired messages. Returns the (1-based) positions in
# KEYS of the channels that were full.
# As in SEND_SCRIPT the first write is a ZADD: a shard at its maxmemory refuses all or nothing,
# and a shard that runs it past its deadline (the last ARGV; 0: none) writes nothing, returns -1.
GROUP_SEND_SCRIPT = (
    """
local deadline = tonumber(ARGV[#ARGV])
"""
    + PAST_DEADLINE_LUA
    + """local now = tonumber(ARGV[#ARGV - 2])
local expiry = tonumber(ARGV[#ARGV - 1])
local unexpired = string.format('(%.17g', now - expiry)
local full = {}
for i = 1, #KEYS do
    if redis.call('ZCOUNT', KEYS[i], unexpired, '+inf') < tonumber(ARGV[i + #KEYS]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], math.ceil(expiry))
    else
        full[#full + 1] = i
    end
end
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - expiry)
end
return full
"""
)


def keepalive_options() -> dict[int, int]:
    """``KEEPALIVE_OPTIONS`` as this platform's socket options (none where it lacks them)."""
    options = KEEPALIVE_OPTIONS.items()
    return {getattr(socket, name): value for name, value in options if hasattr(socket, name)}


def redacted(name: str) -> str:
    """A shard's name for logs: a URL's password (``redis://:secret@host``) left out."""
    scheme, sep, rest = name.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return name


def check_addresses(hosts: list[Mapping[str, Any]]) -> None:
    """``ImproperlyConfigured`` for a host whose ``address`` redis-py cannot use (no scheme,
    a bad port or option): a ``CHANNEL_LAYERS`` written by hand fails at start, as one
    from ``REDIS_URLS`` does, not at its first use while health checks stay green."""
    for host in hosts:
        address = host.get("address")
        if not isinstance(address, str):
            continue
        if is_sentinel_address(address):
            if not host.get("sentinels"):
                raise ImproperlyConfigured(
                    f"channel layer host {redacted(address)!r}: a Sentinel shard needs its 'sentinels' "
                    "((host, port) pairs; REDIS_SENTINELS)"
                )
            continue
        try:
            redis.asyncio.connection.parse_url(address)
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"channel layer host {redacted(address)!r}: {exc} (e.g. redis://host:6379/0)"
            ) from None


class RedisChannelLayer(channels_redis.core.RedisChannelLayer):
    """channels_redis's layer with consistent hashing, all-shard receives and idle-safe reads."""

    def __init__(
        self, hosts: Any = None, command_timeout: float = DEFAULT_COMMAND_TIMEOUT, **kwargs: Any
    ) -> None:
        super().__init__(hosts=hosts, **kwargs)
        check_addresses(self.hosts)
        self.brpop_timeout = blocking_timeout_for(self.hosts, preferred=self.brpop_timeout)
        self.command_timeout = command_timeout_for(self.hosts, preferred=command_timeout)
        self.ring = HashRing([shard_name(host) for host in self.hosts])
        self.health = ShardHealth(
            [redacted(shard_name(host)) for host in self.hosts], probe=self._probe, drop_idle=self._drop_idle
        )
        self.clocks = ShardClocks(self.ring_size)
        self._blocking: dict[tuple[asyncio.AbstractEventLoop, int], Redis] = {}
        self.refusals = MemoryRefusals(self.health.names)
        self.memberships = Memberships(self)
        self._readers: dict[tuple[asyncio.AbstractEventLoop, str], ShardReader] = {}
        self._bzmpop: bool | None = None  # whether the servers know BZMPOP (None: not tried yet)

    async def pop_batch(self, connection: Redis, key: str, count: int) -> list[tuple[bytes, float]]:
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

    def create_pool(self, index: int, socket_timeout: float | None = None) -> Any:
        """A pool that retries a command on a fresh connection when Redis closed the old one,
        and makes a command wait for a free connection when all ``max_connections`` (100) are
        in use: redis-py's own pool refuses it (``MaxConnectionsError``), so a burst of sends
        (a reconnect storm through a relay) failed. It waits ``pool_timeout`` (20 s) at most.

        Its connections wait ``socket_timeout`` for a reply (default: the command timeout;
        the blocking reads' pool: ``blocking_connection``) and keep TCP alive."""
        host = dict(self.hosts[index])
        timeout = self.command_timeout if socket_timeout is None else socket_timeout
        # Retried: a connection Redis closed (restart). Not a timeout: the shard hangs, and
        # each retry would wait another timeout on it (the send goes elsewhere instead).
        retry = Retry(
            ExponentialBackoff(cap=1.0, base=0.05),
            RECONNECT_RETRIES,
            supported_errors=(redis.exceptions.ConnectionError,),
        )
        host.setdefault("retry", retry)
        host.setdefault("retry_on_error", [redis.exceptions.ConnectionError])
        if "address" not in host:
            return create_pool(host | {"socket_timeout": timeout})  # Sentinel: channels_redis's own
        address = host.pop("address")
        if address.startswith(("redis://", "rediss://")) or is_sentinel_address(address):
            host.setdefault("socket_keepalive", True)
            host.setdefault("socket_keepalive_options", keepalive_options())
        if is_sentinel_address(address):
            return sentinel_pool(address, host | {"socket_timeout": timeout}, self.command_timeout)
        host.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
        host["timeout"] = host.pop("pool_timeout", DEFAULT_POOL_TIMEOUT)
        pool = redis.asyncio.BlockingConnectionPool.from_url(address, **host)
        pool.connection_kwargs["socket_timeout"] = timeout  # over a URL's ?socket_timeout= too
        return pool

    def blocking_connection(self, index: int) -> Redis:
        """The client of shard ``index`` for blocking reads, in this event loop: its socket
        timeout is the blocking wait plus a command timeout (``blocking_read_timeout``)."""
        for gone in [key for key in self._blocking if key[0].is_closed()]:
            del self._blocking[gone]
        key = (asyncio.get_running_loop(), index)
        if key not in self._blocking:
            timeout = blocking_read_timeout(
                self.brpop_timeout, self.command_timeout, host_socket_timeout(self.hosts[index])
            )
            self._blocking[key] = Redis(connection_pool=self.create_pool(index, socket_timeout=timeout))
        return self._blocking[key]

    async def _probe(self, index: int) -> None:
        """Whether shard ``index`` answers (a ping; its clock compared while at it)."""
        connection = self.connection(index)
        await connection.ping()
        await self.clocks.measure(connection, index)

    async def _drop_idle(self, index: int) -> None:
        """Disconnect shard ``index``'s idle pooled connections in this event loop: after a
        timeout they may all be dead (a lost host), and each would cost a timeout in turn."""
        await self.connection(index).connection_pool.disconnect(inuse_connections=False)
        blocking = self._blocking.get((asyncio.get_running_loop(), index))
        if blocking is not None:
            await blocking.connection_pool.disconnect(inuse_connections=False)

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
        order = [(first + offset) % self.ring_size for offset in range(self.ring_size)]
        # Shards known down are not tried (until their probe finds them answering).
        return [index for index in order if self.health.usable(index)]

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
        if "!" in channel:
            await self._send_specific(channel, key, data)
            return
        failure: BaseException | None = None
        for index in self._shards_for_send(channel):
            capacity = self._shard_capacity(channel, index)
            if capacity <= 0:
                continue
            try:
                accepted = await self._eval_send(index, channel, key, data, capacity)
            except LateForDeadline as error:
                failure = error  # it answered, too late for this message: another shard takes it
                continue
            except OUTAGE_ERRORS as error:
                self.health.failed(index, error)
                failure = error
                continue
            self.health.answered(index)
            if accepted:
                return
        if failure is not None:
            raise failure  # no shard took it, and one could not be asked
        if not any(self.health.usable(index) for index in range(self.ring_size)):
            raise redis.exceptions.ConnectionError(f"no Redis shard answers: {', '.join(self.health.names)}")
        raise ChannelFull()

    async def _eval_send(self, index: int, channel: str, key: str, data: bytes, capacity: int) -> bool:
        """Whether shard ``index`` took the message: not if the channel holds its capacity
        there, nor if the shard is at its ``maxmemory`` (refused, logged: as full).
        ``LateForDeadline`` when the shard ran it too late to count (it hung: clocks)."""
        args = [data, time.time(), self.expiry, capacity, await self._deadline(index)]
        accepted = await self._eval_writing(index, SEND_SCRIPT, [key], args)
        if accepted is None:
            self.refusals.refused(index, "send", f"a send to {channel}")
            return False
        if accepted == LATE:
            raise LateForDeadline(f"shard {self.health.names[index]} ran a send past its deadline")
        return bool(accepted)

    async def _deadline(self, index: int) -> float:
        """A write's deadline on shard ``index``, in its clock (compared again when due)."""
        if self.clocks.due(index):
            await self.clocks.measure(self.connection(index), index)
        return self.clocks.deadline(index, self.command_timeout)

    async def _eval_writing(self, index: int, script: str, keys: list[str], args: list[Any]) -> Any:
        """``script``'s result on shard ``index``, or None when the shard, at its ``maxmemory``,
        refuses it even after the expired messages of ``keys`` were trimmed (a full Redis
        still deletes; the scripts' own trim comes after their first write, which it refuses)."""
        connection = self.connection(index)
        for attempt in range(2):
            try:
                return await connection.eval(script, len(keys), *keys, *args)
            except redis.exceptions.ResponseError as error:
                if not out_of_memory(error):
                    raise
            if attempt or not await self._trim_expired(connection, keys):
                return None
        return None

    async def _trim_expired(self, connection: Redis, keys: list[str]) -> int:
        """Remove the expired messages of ``keys``; how many went."""
        cutoff = time.time() - self.expiry
        async with connection.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zremrangebyscore(key, "-inf", cutoff)
            return sum(await pipe.execute())

    def spare_shard(self, index: int) -> int | None:
        """Where the ``!`` channels of shard ``index`` go while it is away: the next shard in
        the list (the same for every process), whose key their process reads too. None with
        one shard."""
        return (index + 1) % self.ring_size if self.ring_size > 1 else None

    def specific_shards(self, channel: str) -> list[int]:
        """The shards a ``!`` channel is read on: its own, then its spare."""
        home = self.consistent_hash(channel)
        spare = self.spare_shard(home)
        return [home] if spare is None else [home, spare]

    async def _send_specific(self, channel: str, key: str, data: bytes) -> None:
        """A ``!`` channel lives on one shard and its spare: while its shard is away (or hangs:
        a command timeout), the message goes to the spare, which its process reads too. Both
        away: wait for either (up to ``SPECIFIC_SEND_WAIT_SECONDS``: a reply then arrives
        late, not never), then raise."""
        shards = self.specific_shards(channel)
        deadline = time.monotonic() + SPECIFIC_SEND_WAIT_SECONDS
        retry = RETRY_SECONDS
        while True:
            for index in shards:
                if not self.health.usable(index):
                    continue
                try:
                    accepted = await self._eval_send(index, channel, key, data, self.get_capacity(channel))
                except LateForDeadline:
                    continue  # it answered, too late (it hung a moment): wrote nothing
                except OUTAGE_ERRORS as error:
                    self.health.failed(index, error)
                    continue
                self.health.answered(index)
                if not accepted:
                    raise ChannelFull()
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = " and ".join(self.health.names[index] for index in shards)
                errors = "; ".join(self.health.last_error[index] or "none" for index in shards)
                raise redis.exceptions.ConnectionError(
                    f"Redis shard(s) {names} of {channel} did not answer for "
                    f"{SPECIFIC_SEND_WAIT_SECONDS:g} s (last errors: {errors})"
                )
            if any(self.health.usable(index) for index in shards):
                await asyncio.sleep(min(retry, remaining))  # answers, yet failed: back off
                retry = min(retry * 2, MAX_RETRY_SECONDS)
            else:
                await self._wait_any_usable(shards, remaining)

    async def _wait_any_usable(self, shards: list[int], timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until one of ``shards`` is usable."""
        deadline = time.monotonic() + timeout
        while not any(self.health.usable(index) for index in shards) and time.monotonic() < deadline:
            await asyncio.sleep(min(PROBE_SECONDS / 2, max(0.0, deadline - time.monotonic())))

    async def receive(self, channel: str) -> dict:
        """Receive the next message of a channel; cancelling the wait never loses a message."""
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        if "!" in channel:
            non_local_name = self.non_local_name(channel)
            assert non_local_name.endswith(self.client_prefix + "!"), "Wrong client prefix"
            return await self._reader(SpecificChannelReader, non_local_name).receive(channel)
        return (await self.receive_single(channel))[1]

    async def receive_single(self, channel: str) -> tuple[str, dict]:
        if "!" in channel:
            return await super().receive_single(channel)
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        message = self.deserialize(await self._reader(GeneralChannelReader, channel).receive())
        message.pop("__asgi_channel__", None)
        return channel, message

    def _reader(self, kind: type[Reader], name: str) -> Reader:
        # Sync code (async_to_sync under WSGI) may run each call in a new event loop:
        # forget the readers of loops that are gone.
        for gone in [k for k in self._readers if k[0].is_closed()]:
            del self._readers[gone]
        key = (asyncio.get_running_loop(), name)
        reader = self._readers.get(key)
        if not isinstance(reader, kind) or reader.closing:
            reader = kind(self, name)
            self._readers[key] = reader
        return reader

    def _readers_of_this_loop(self) -> list[ShardReader]:
        loop = asyncio.get_running_loop()
        return [self._readers.pop(key) for key in [k for k in self._readers if k[0] is loop]]

    async def requeue_pending(self) -> int:
        """Stop receiving in this event loop; put fetched, undelivered general-channel messages back.

        For a graceful worker shutdown: once its ``receive()`` calls are cancelled,
        nothing this process took from Redis is lost. What was fetched goes back at once;
        what the reads still under way fetch goes back as each read returns (``keep``),
        not after the last one's blocking timeout. Returns how many went back.
        """
        readers = self._readers_of_this_loop()
        for reader in readers:
            reader.closing = True  # no new read; what the current one fetches goes back
        # A '!' channel's messages are this process's: only the general channels' go back.
        general = [reader for reader in readers if isinstance(reader, GeneralChannelReader)]
        outcomes = [await self.put_back(r.key, *item) for r in general for item in r.take_unreceived()]
        await asyncio.gather(*(reader.stop() for reader in readers))
        outcomes += [outcome for reader in general for outcome in reader.handed_back]
        requeued, refused = outcomes.count(True), outcomes.count(False)
        if requeued:
            logger.info("requeued %d fetched but undelivered message(s)", requeued)
        if refused:
            logger.error(
                "%d fetched message(s) lost: their shard, at its maxmemory, refused them back", refused
            )
        return requeued

    async def put_back(self, key: str, member: bytes, score: float, index: int) -> bool:
        """Return one fetched message to its queue, in its place (its score); False when the
        shard, at its maxmemory, refuses it."""
        connection = self.connection(index)
        try:
            await connection.zadd(key, {member: score})
        except redis.exceptions.OutOfMemoryError:
            return False
        await connection.expire(key, math.ceil(self.expiry))
        return True

    # --- groups --------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        await super().group_add(group, channel)
        self.memberships.add(group, channel)
        loop = asyncio.get_running_loop()
        if any(key[0] is loop for key in self._readers):
            # A process that receives in this loop (a server, not a one-off call from sync
            # code): it keeps an eye on its memberships from here.
            self.memberships.watch()

    async def group_discard(self, group: str, channel: str) -> None:
        self.memberships.discard(group, channel)
        await super().group_discard(group, channel)

    async def group_send(self, group: str, message: dict) -> None:
        """Send to every member, on every shard at once (a hung shard delays no other); the
        members of a shard that does not answer get it through its spare. The group's own
        shard down: a replicated one's failover is waited for; a single server's, nobody gets
        it (logged)."""
        assert self.require_valid_group_name(group), "Group name not valid"
        names = await self._group_members(group)
        if names is None:
            logger.warning("group_send to %s: its shard does not answer; nobody got the message", group)
            return
        by_shard, messages, capacities = self._map_channel_keys_to_connection(names, message)
        await asyncio.gather(
            *(
                self._group_send_on(shard, group, keys, messages, capacities)
                for shard, keys in by_shard.items()
            )
        )

    async def _group_members(self, group: str) -> list[str] | None:
        """The member channels of ``group``, from its shard; None when the shard does not answer.
        A replicated shard's failover is waited for (``FAILOVER_WAIT_SECONDS``): its members are
        on the replica it promotes."""
        key, index = self._group_key(group), self.consistent_hash(group)
        deadline = time.monotonic() + (FAILOVER_WAIT_SECONDS if self.replicated(index) else 0.0)
        while True:
            try:
                if not self.health.usable(index):
                    raise redis.exceptions.ConnectionError("known down")
                connection = self.connection(index)
                await connection.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
                names = [member.decode("utf8") for member in await connection.zrange(key, 0, -1)]
            except OUTAGE_ERRORS as error:
                if self.health.usable(index):
                    self.health.failed(index, error)
                if time.monotonic() >= deadline:
                    return None
                await self.health.wait_usable(index, deadline - time.monotonic())
                continue
            self.health.answered(index)
            return names

    def replicated(self, index: int) -> bool:
        """Whether shard ``index`` fails over (a Sentinel master) rather than being lost."""
        host = self.hosts[index]
        return is_sentinel_address(host.get("address")) or "master_name" in host

    async def _group_send_on(
        self, shard: int, group: str, keys: list[str], messages: dict, capacities: dict
    ) -> None:
        """One shard's part of a group send: its member channels ``keys`` (their messages and
        capacities by key). The shard away (or hanging: a command timeout), they go to its
        spare, which their processes read too; both away, they miss it (counted, logged)."""
        for index in (shard, self.spare_shard(shard)):
            if index is None or not self.health.usable(index):
                continue
            try:
                full = await self._eval_group_send(index, keys, messages, capacities)
            except LateForDeadline:
                continue  # it answered, too late (it hung a moment): wrote nothing
            except OUTAGE_ERRORS as error:
                self.health.failed(index, error)
                continue
            self.health.answered(index)
            if full is None:
                self._group_send_refused(index, group, keys)
                return
            for position in full:  # each a WARNING naming the channel, and counted
                dropped(
                    "group_send",
                    "full",
                    self._channel_of(keys[int(position) - 1]),
                    detail=f"group {group}",
                )
            return
        self._members_missed(group, keys, "a shard (and its spare) that does not answer")

    async def _eval_group_send(
        self, index: int, keys: list[str], messages: dict, capacities: dict
    ) -> list[int] | None:
        """``GROUP_SEND_SCRIPT`` on shard ``index``: the positions of full channels; None when
        the shard, at its ``maxmemory``, refused it; ``LateForDeadline`` when it hung meanwhile."""
        args = [messages[k] for k in keys] + [capacities[k] for k in keys]
        args += [time.time(), self.expiry, await self._deadline(index)]
        full = await self._eval_writing(index, GROUP_SEND_SCRIPT, keys, args)
        if full == LATE:
            raise LateForDeadline(f"shard {self.health.names[index]} ran a group send past its deadline")
        return full

    def _members_missed(self, group: str, keys: list[str], where: str) -> None:
        """A group send's member channels ``keys`` on a shard it could not write: counted, logged."""
        DROPS.count("group_send", "shard_down", len(keys))
        logger.warning("group_send to %s: %d member channel(s) on %s missed it", group, len(keys), where)

    def _group_send_refused(self, shard: int, group: str, keys: list[str]) -> None:
        """Shard ``shard``, at its ``maxmemory``, refused a group send to the member channels
        with these keys: they miss the message, as full ones would (logged)."""
        channels = [self._channel_of(key) for key in keys]
        DROPS.count("group_send", "refused", len(keys))  # counted here; MemoryRefusals warns
        shown = ", ".join(channels[:3]) + (f" and {len(channels) - 3} more" if len(channels) > 3 else "")
        self.refusals.refused(
            shard, "group_send", f"group_send to {group}: {len(keys)} member channel(s) missed it ({shown})"
        )

    def _channel_of(self, key: str) -> str:
        """The channel a key holds, for logs (a '!' channel: its process's inbox)."""
        return key[len(self.prefix) :]

    async def close_pools(self) -> None:
        self.memberships.stop()
        for reader in self._readers_of_this_loop():
            await reader.abort()
        await self.health.stop_probes()
        loop = asyncio.get_running_loop()
        for key in [key for key in self._blocking if key[0] is loop]:
            await self._blocking.pop(key).aclose(close_connection_pool=True)
        await super().close_pools()
