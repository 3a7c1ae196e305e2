"""``RabbitMQChannelLayer``: the kit's channel layer on RabbitMQ (AMQP 0-9-1, through aiormq).

One queue per channel, ``<prefix>.<channel>`` (``!`` written ``:``), declared by whoever first sends to it,
receives from it or adds it to a group, with the same arguments everywhere:
``x-message-ttl`` (``expiry``), ``x-max-length`` (the channel's capacity) with
``x-overflow: reject-publish``, so a send to a full queue is refused by the server
(publisher confirms: ``ChannelFull``), and for ``!`` channels ``x-expires``, so the queues
of a process that died go away with their group bindings.

Receiving: one consumer per channel and event loop, with manual acknowledgements and a
prefetch of one. A message is acknowledged when a ``receive()`` takes it: what a process
fetched and did not hand out (a cancelled wait, a worker stopping, a lost connection)
goes back to the queue, to this process or another; a process killed loses nothing that
no ``receive()`` had returned. Concurrent receivers of a general channel (workers) share
its queue, each message going to one of them.

Groups: a direct exchange, ``<prefix>.groups``; a member is a binding of its channel's
queue with the group's name, so a ``group_send`` is one publish and RabbitMQ copies it to
every member's queue. Group expiry is kept by the process that added the member (the
binding is removed once ``group_expiry`` passes without another ``group_add``), and a dead
process's ``!`` queues take their bindings with them (``x-expires``).

Connections are per event loop, with AMQP heartbeats; a lost connection (a RabbitMQ
restart) is reopened with backoff, the consumers resubscribe and the group bindings this
process made are restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import heapq
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiormq
import msgpack
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from pamqp import commands as spec

from channels_kit.drops import dropped

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
# Seconds between AMQP heartbeats: an idle connection stays open, a dead peer is noticed.
DEFAULT_HEARTBEAT = 30
# How long an unused '!' queue (no consumer, no declare) outlives its process, in seconds.
SPECIFIC_QUEUE_EXPIRY = 300
# A channel's consumer stops after this long with nobody waiting on it (its buffered
# message, if any, goes back to the queue).
IDLE_CONSUMER_SECONDS = 30.0
# Reconnecting: first delay, longest delay, and how long an operation waits in all.
RECONNECT_FIRST_DELAY = 0.1
RECONNECT_MAX_DELAY = 2.0
DEFAULT_RECONNECT_TIMEOUT = 60.0
# Tries of an operation whose channel the broker closed (see ``_retrying``).
CHANNEL_RETRIES = 5

CONNECTION_ERRORS = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.IncompleteReadError,
)


@dataclass
class _Delivery:
    tag: int
    body: bytes
    generation: int


@dataclass
class _Reader:
    """The consumer of one channel's queue in one event loop, and what it fetched."""

    channel: str
    buffer: asyncio.Queue[_Delivery] = field(default_factory=asyncio.Queue)
    waiting: int = 0
    consumer_tag: str | None = None
    generation: int = -1
    idle_timer: asyncio.TimerHandle | None = None


class _Connection:
    """One event loop's AMQP connection and its three channels: publishing (with
    confirms), consuming (prefetch one per consumer) and everything else (declares,
    bindings, deletes; an error there closes only that channel)."""

    def __init__(self, connection: AbstractConnection, generation: int) -> None:
        self.connection = connection
        self.generation = generation
        self.publish: AbstractChannel | None = None
        self.consume: AbstractChannel | None = None
        self.ops: AbstractChannel | None = None
        self.declared: set[str] = set()
        self.exchange_declared = False

    @classmethod
    async def open(cls, url: str, generation: int, timeout: float) -> _Connection:
        connection = await asyncio.wait_for(aiormq.connect(url), timeout)
        self = cls(connection, generation)
        try:
            self.publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self.consume = await connection.channel(publisher_confirms=False)
            await self.consume.basic_qos(prefetch_count=1)
            self.ops = await connection.channel(publisher_confirms=False)
        except BaseException:
            # A server still starting may accept the connection and then refuse its channels.
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        return self

    @property
    def is_open(self) -> bool:
        """Whether the connection and its publishing and consuming channels are open. Either
        channel closed by the broker (an error on it) leaves the connection useless to the
        layer: its consumers and delivery tags went with the channel, so the connection is
        replaced as if it were lost (the operations channel reopens by itself)."""
        if self.connection.is_closed:
            return False
        return all(channel is not None and not channel.is_closed for channel in (self.publish, self.consume))

    async def ops_channel(self) -> AbstractChannel:
        """The operations channel, reopened when an error closed it."""
        if self.ops is None or self.ops.is_closed:
            self.ops = await self.connection.channel(publisher_confirms=False)
            self.declared.clear()
            self.exchange_declared = False
        return self.ops

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.connection.close(), 5)


class _LoopState:
    """What the layer holds in one event loop: its connection and its readers."""

    def __init__(self) -> None:
        self.connection: _Connection | None = None
        self.connecting: asyncio.Lock = asyncio.Lock()
        self.generation = 0
        self.readers: dict[str, _Reader] = {}
        self.resubscriber: asyncio.Task[None] | None = None
        self.closed = False


class RabbitMQChannelLayer(BaseChannelLayer):
    """A Channels layer on RabbitMQ; every process of every host that reaches the server shares it."""

    extensions = ["groups", "flush"]

    def __init__(
        self,
        url: str = DEFAULT_URL,
        prefix: str = "asgi",
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: dict[str, int] | None = None,
        heartbeat: int = DEFAULT_HEARTBEAT,
        connect_timeout: float = 10.0,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
        specific_queue_expiry: int = SPECIFIC_QUEUE_EXPIRY,
        **kwargs: Any,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity, **kwargs)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.url = with_heartbeat(url, heartbeat)
        self.prefix = prefix
        self.group_expiry = group_expiry
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self.specific_queue_expiry = max(specific_queue_expiry, expiry)
        self.client_prefix = uuid.uuid4().hex
        self.exchange = f"{prefix}.groups"
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        # Every queue this layer declared (any loop), for flush(); the memberships it added,
        # for group expiry and for restoring the bindings after a reconnect.
        self._queues: set[str] = set()
        self._memberships: dict[tuple[str, str], float] = {}
        self._expiries: list[tuple[float, str, str]] = []

    # --- names and arguments --------------------------------------------------------------

    def queue_name(self, channel: str) -> str:
        """The queue of ``channel``: the prefix, a dot, the channel's full name with its ``!``
        as ``:`` (AMQP queue names have no ``!``; channel names have no ``:``)."""
        return f"{self.prefix}.{channel.replace('!', ':')}"

    def queue_arguments(self, channel: str) -> dict[str, Any]:
        """The arguments every process declares ``channel``'s queue with (they must agree)."""
        arguments: dict[str, Any] = {
            "x-message-ttl": int(self.expiry * 1000),
            "x-max-length": self.get_capacity(channel),
            "x-overflow": "reject-publish",
        }
        if "!" in channel:
            arguments["x-expires"] = int(self.specific_queue_expiry * 1000)
        return arguments

    def serialize(self, message: dict[str, Any]) -> bytes:
        return msgpack.packb(message, use_bin_type=True)

    def deserialize(self, body: bytes) -> dict[str, Any]:
        return msgpack.unpackb(body, raw=False)

    # --- connections ------------------------------------------------------------------------

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
            self._close_with(loop)
        return state

    def _close_with(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close this loop's connection before the loop itself closes (``async_to_sync``
        and ``asyncio.run`` close theirs), so that RabbitMQ sees a clean goodbye."""
        original = loop.close

        def close() -> None:
            state = self._states.pop(loop, None)
            if state is not None and not loop.is_running():
                with contextlib.suppress(Exception):
                    loop.run_until_complete(self._close_state(state))
            original()

        loop.close = close  # type: ignore[method-assign]

    async def _connection(self, state: _LoopState) -> _Connection:
        """This loop's open connection, (re)opened with backoff for up to ``reconnect_timeout``."""
        if state.connection is not None and state.connection.is_open:
            return state.connection
        async with state.connecting:
            if state.connection is not None and state.connection.is_open:
                return state.connection
            if state.closed:
                raise RuntimeError("the channel layer was closed in this event loop")
            lost = state.connection is not None
            if state.connection is not None and not state.connection.connection.is_closed:
                logger.warning("RabbitMQ closed a channel of this process's connection; replacing it")
                await state.connection.close()
            deadline = time.monotonic() + self.reconnect_timeout
            delay = RECONNECT_FIRST_DELAY
            while True:
                try:
                    connection = await _Connection.open(self.url, state.generation + 1, self.connect_timeout)
                    break
                except (*CONNECTION_ERRORS, TimeoutError, aiormq.exceptions.AMQPError) as error:
                    if time.monotonic() + delay > deadline:
                        where = redacted(self.url)
                        raise ConnectionError(f"RabbitMQ at {where} does not answer: {error}") from error
                    logger.warning("RabbitMQ connection failed (%s); retrying in %.1f s", error, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_DELAY)
            state.generation = connection.generation
            state.connection = connection
            connection.connection.closing.add_done_callback(lambda _: self._on_connection_lost(state))
            for channel in (connection.publish, connection.consume):  # see _Connection.is_open
                assert channel is not None
                channel.closing.add_done_callback(lambda _: self._on_connection_lost(state))
            if lost:
                logger.warning("RabbitMQ connection reopened; resubscribing and restoring group bindings")
                await self._restore_bindings(connection)
                self._forget_deliveries(state)
            return connection

    def _on_connection_lost(self, state: _LoopState) -> None:
        """The connection closed: what was fetched on it is RabbitMQ's again (it redelivers
        unacknowledged messages), so readers drop it and resubscribe when someone waits."""
        if not state.closed:
            self._forget_deliveries(state)

    def _forget_deliveries(self, state: _LoopState) -> None:
        """Readers drop what earlier connections fetched and, when someone waits, subscribe
        again on the current one (in a task of their own)."""
        current = state.connection.generation if state.connection and state.connection.is_open else -1
        for reader in state.readers.values():
            if reader.generation != current:
                reader.consumer_tag = None
            _keep_deliveries_of(reader, current)
        waited = any(reader.waiting for reader in state.readers.values())
        if waited and (state.resubscriber is None or state.resubscriber.done()):
            state.resubscriber = asyncio.ensure_future(self._resubscribe(state))

    async def _resubscribe(self, state: _LoopState) -> None:
        """Subscribe every waited-on channel again, trying until it works: a waiting
        ``receive()`` has nobody else to do it (a server away longer than
        ``reconnect_timeout``, or refusing channels while it starts)."""
        delay = RECONNECT_FIRST_DELAY
        while not state.closed:
            try:
                await self._connection(state)
                for reader in list(state.readers.values()):
                    if reader.waiting:
                        await self._retrying(lambda c, r=reader: self._subscribe(state, r, c))
                return
            except Exception as error:  # noqa: BLE001 - logged, then tried again
                logger.warning("resubscribing to RabbitMQ failed (%r); again in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def in_connection(self, operation: Callable[[_Connection], Awaitable[T]]) -> T:
        """Run ``operation`` on this loop's connection (the inspector's way in)."""
        return await self._retrying(operation)

    async def _retrying(self, operation: Callable[[_Connection], Awaitable[T]]) -> T:
        """Run ``operation`` on this loop's connection, again on a new one while connections
        are lost (a server restarting accepts connections and drops them again), for up to
        ``reconnect_timeout`` seconds."""
        state = self._state()
        deadline = time.monotonic() + self.reconnect_timeout
        delay = RECONNECT_FIRST_DELAY
        channel_failures = 0
        while True:
            connection = await self._connection(state)
            try:
                return await operation(connection)
            except CONNECTION_ERRORS as error:
                if isinstance(error, aiormq.exceptions.ChannelInvalidStateError) and connection.is_open:
                    # Only the channel died (see below): closing the connection would
                    # cancel every other operation on it.
                    channel_failures += 1
                    if channel_failures > CHANNEL_RETRIES or time.monotonic() + delay > deadline:
                        raise
                    logger.warning("RabbitMQ closed the channel of an operation (%r); retrying", error)
                else:
                    if time.monotonic() + delay > deadline:
                        raise
                    logger.warning("RabbitMQ connection lost during an operation (%r); retrying", error)
                    await connection.close()
            except aiormq.exceptions.ChannelClosed as error:
                # A channel error closes the operations channel for every operation on it:
                # this one may have failed for another's error, or for a queue still
                # recovering as the broker starts ("home node ... is down or inaccessible").
                # The channel reopens; after a few tries the error stands.
                channel_failures += 1
                if channel_failures > CHANNEL_RETRIES or time.monotonic() + delay > deadline:
                    raise
                logger.warning("RabbitMQ closed the channel of an operation (%r); retrying", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _declare(self, connection: _Connection, channel: str) -> str:
        queue = self.queue_name(channel)
        if queue not in connection.declared:
            ops = await connection.ops_channel()
            try:
                await ops.queue_declare(queue, arguments=self.queue_arguments(channel))
            except aiormq.exceptions.ChannelPreconditionFailed as error:
                if f"queue '{queue}'" not in str(error):
                    raise  # another operation's error closed the channel: _retrying tries again
                raise RuntimeError(
                    f"RabbitMQ holds queue {queue!r} with other arguments than this process's "
                    f"(expiry, capacity or channel_capacity differ between processes?): {error}"
                ) from error
            connection.declared.add(queue)
            self._queues.add(queue)
        return queue

    async def _declare_exchange(self, connection: _Connection) -> None:
        if not connection.exchange_declared:
            ops = await connection.ops_channel()
            await ops.exchange_declare(self.exchange, exchange_type="direct")
            connection.exchange_declared = True

    # --- send / receive ---------------------------------------------------------------------

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Put ``message`` on ``channel``'s queue; ``ChannelFull`` when the queue is at capacity."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        body = self.serialize(message)

        async def publish(connection: _Connection) -> None:
            for attempt in (1, 2):
                queue = await self._declare(connection, channel)
                assert connection.publish is not None
                try:
                    await connection.publish.basic_publish(
                        body, routing_key=queue, mandatory=True, properties=_properties()
                    )
                except aiormq.exceptions.PublishError:
                    # The queue went away since this connection declared it (x-expires, a
                    # flush, a server restart): declare it again and send once more.
                    connection.declared.discard(queue)
                    if attempt == 2:
                        raise
                    continue
                except aiormq.exceptions.DeliveryError as error:
                    # Refused by the queue (reject-publish): it holds its capacity.
                    raise ChannelFull(channel) from error
                return

        await self._retrying(publish)

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message of ``channel``; cancelling the wait loses nothing."""
        self.require_valid_channel_name(channel)
        state = self._state()
        reader = state.readers.get(channel)
        if reader is None:
            reader = state.readers[channel] = _Reader(channel)
        reader.waiting += 1
        if reader.idle_timer is not None:
            reader.idle_timer.cancel()
            reader.idle_timer = None
        try:
            while True:
                if reader.consumer_tag is None:
                    await self._retrying(lambda c: self._subscribe(state, reader, c))
                delivery = await reader.buffer.get()
                connection = state.connection
                current = connection is not None and connection.is_open
                if not current or delivery.generation != connection.generation:
                    continue  # fetched on a lost connection: RabbitMQ redelivers it
                assert connection.consume is not None
                try:
                    await connection.consume.basic_ack(delivery.tag, wait=False)
                except CONNECTION_ERRORS:
                    continue  # not acknowledged: it is redelivered, to us or another
                return self.deserialize(delivery.body)
        finally:
            reader.waiting -= 1
            if not reader.waiting and not state.closed:
                reader.idle_timer = asyncio.get_running_loop().call_later(
                    IDLE_CONSUMER_SECONDS, lambda: asyncio.ensure_future(self._stop_idle(state, reader))
                )

    async def _subscribe(self, state: _LoopState, reader: _Reader, connection: _Connection) -> None:
        if reader.consumer_tag is not None and reader.generation == connection.generation:
            return
        queue = await self._declare(connection, reader.channel)
        generation = connection.generation

        async def deliver(message: DeliveredMessage) -> None:
            assert message.delivery_tag is not None
            reader.buffer.put_nowait(_Delivery(message.delivery_tag, message.body, generation))

        tag = f"{self.client_prefix}.{uuid.uuid4().hex[:12]}"
        assert connection.consume is not None
        reader.consumer_tag, reader.generation = tag, generation
        try:
            await connection.consume.basic_consume(queue, deliver, consumer_tag=tag)
        except BaseException:
            reader.consumer_tag = None
            raise

    async def _stop_idle(self, state: _LoopState, reader: _Reader) -> None:
        """Nobody waited on the channel for a while: stop its consumer, hand its fetched
        message back, forget it."""
        if reader.waiting or state.readers.get(reader.channel) is not reader:
            return
        del state.readers[reader.channel]
        await self._release(state, reader)

    async def _release(self, state: _LoopState, reader: _Reader) -> int:
        """Cancel ``reader``'s consumer and put what it fetched back on the queue."""
        connection = state.connection
        tag, reader.consumer_tag = reader.consumer_tag, None
        if connection is None or not connection.is_open or connection.consume is None:
            return 0
        returned = 0
        with contextlib.suppress(*CONNECTION_ERRORS, aiormq.exceptions.AMQPError):
            if tag is not None and reader.generation == connection.generation:
                await connection.consume.basic_cancel(tag)
            while not reader.buffer.empty():
                delivery = reader.buffer.get_nowait()
                if delivery.generation == connection.generation:
                    await connection.consume.basic_nack(delivery.tag, requeue=True)
                    returned += 1
        return returned

    async def requeue_pending(self) -> int:
        """Stop receiving in this loop and give every fetched, undelivered message back."""
        state = self._states.get(asyncio.get_running_loop())
        if state is None:
            return 0
        returned = 0
        for channel, reader in list(state.readers.items()):
            if reader.idle_timer is not None:
                reader.idle_timer.cancel()
            state.readers.pop(channel, None)
            returned += await self._release(state, reader)
        return returned

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new ``!`` channel name of this process (its queue appears on first use)."""
        return f"{prefix}.{self.client_prefix}!{uuid.uuid4().hex}"

    # --- groups -----------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        """Bind ``channel``'s queue to ``group``; it leaves after ``group_expiry`` unless re-added."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self._expire_memberships()

        async def bind(connection: _Connection) -> None:
            queue = await self._declare(connection, channel)
            await self._declare_exchange(connection)
            ops = await connection.ops_channel()
            await ops.queue_bind(queue, self.exchange, routing_key=group)

        await self._retrying(bind)
        expires = time.monotonic() + self.group_expiry
        self._memberships[(group, channel)] = expires
        heapq.heappush(self._expiries, (expires, group, channel))

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group`` (nothing happens when it is not a member)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._memberships.pop((group, channel), None)
        await self._retrying(lambda c: self._unbind(c, group, channel))

    async def _unbind(self, connection: _Connection, group: str, channel: str) -> None:
        ops = await connection.ops_channel()
        # The queue or the exchange is gone: so is the binding.
        with contextlib.suppress(aiormq.exceptions.ChannelNotFoundEntity):
            await ops.queue_unbind(self.queue_name(channel), self.exchange, routing_key=group)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """One copy of ``message`` to every member; members whose queue is full miss it."""
        self.require_valid_group_name(group)
        await self._expire_memberships()
        body = self.serialize(message)

        async def publish(connection: _Connection) -> None:
            await self._declare_exchange(connection)
            assert connection.publish is not None
            # A nack means some member's queue was full: the others have it, as Channels wants;
            # the server does not say whose (WARNING naming the group, counted).
            try:
                await connection.publish.basic_publish(
                    body, exchange=self.exchange, routing_key=group, properties=_properties()
                )
            except aiormq.exceptions.DeliveryError:
                dropped("group_send", "full", f"a member queue of group {group}")

        await self._retrying(publish)

    async def _expire_memberships(self) -> None:
        """Unbind the members this process added whose ``group_expiry`` has passed."""
        now = time.monotonic()
        while self._expiries and self._expiries[0][0] <= now:
            expires, group, channel = heapq.heappop(self._expiries)
            if self._memberships.get((group, channel)) == expires:
                del self._memberships[(group, channel)]
                await self._retrying(lambda c, g=group, ch=channel: self._unbind(c, g, ch))

    async def _restore_bindings(self, connection: _Connection) -> None:
        """After a reconnect (the server may have restarted): bind this process's members again."""
        for group, channel in list(self._memberships):
            queue = await self._declare(connection, channel)
            await self._declare_exchange(connection)
            ops = await connection.ops_channel()
            await ops.queue_bind(queue, self.exchange, routing_key=group)

    # --- lifecycle --------------------------------------------------------------------------

    async def flush(self) -> None:
        """Delete every queue this layer declared and the groups exchange."""

        async def delete(connection: _Connection) -> None:
            for queue in sorted(self._queues):
                ops = await connection.ops_channel()
                with contextlib.suppress(aiormq.exceptions.ChannelClosed):
                    await ops.queue_delete(queue)
            ops = await connection.ops_channel()
            with contextlib.suppress(aiormq.exceptions.ChannelClosed):
                await ops.exchange_delete(self.exchange)
            connection.declared.clear()
            connection.exchange_declared = False

        await self._retrying(delete)
        self._queues.clear()
        self._memberships.clear()
        self._expiries.clear()

    async def close(self) -> None:
        """Close this loop's connection (fetched messages go back to their queues)."""
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await self._close_state(state)

    async def _close_state(self, state: _LoopState) -> None:
        state.closed = True
        for reader in state.readers.values():
            if reader.idle_timer is not None:
                reader.idle_timer.cancel()
        if state.resubscriber is not None:
            state.resubscriber.cancel()
        if state.connection is not None:
            await state.connection.close()


def _properties() -> spec.Basic.Properties:
    """Transient messages (a channel layer's live seconds, not across restarts), stamped with
    their send time (whole seconds: AMQP's timestamp) for the inspector's oldest ages."""
    return spec.Basic.Properties(delivery_mode=1, timestamp=datetime.datetime.now(datetime.UTC))


def _keep_deliveries_of(reader: _Reader, generation: int) -> None:
    """Forget the deliveries of every connection but ``generation`` (-1: of all of them)."""
    kept = []
    while not reader.buffer.empty():
        delivery = reader.buffer.get_nowait()
        if delivery.generation == generation:
            kept.append(delivery)
    for delivery in kept:
        reader.buffer.put_nowait(delivery)


def with_heartbeat(url: str, heartbeat: int) -> str:
    """``url`` with ``heartbeat=<seconds>`` in its query, unless it names one already."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("heartbeat", str(heartbeat))
    return urlunsplit(parts._replace(query=urlencode(query)))


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
