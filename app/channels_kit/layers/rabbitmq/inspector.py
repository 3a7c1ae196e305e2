"""Queue figures and worker states of the RabbitMQ layer.

Worker states go to a RabbitMQ stream, ``<prefix>.kit.worker-states``: a log that every
reader reads from an offset without taking anything from it, so any number of
``channels_status`` runs and ``/metrics`` scrapes see the same states at once. Each save
appends the worker's state with its expiry; a clean exit appends a tombstone. A reader
reads the last ``STATE_WINDOW_SECONDS`` and keeps each worker's latest live entry; the
stream itself keeps a few minutes (``x-max-age``).

Queues: AMQP cannot list them, so the figures are those of the channels live workers
serve (a passive declare gives the depth; the head message's send time, read and put
back, its age). ``!`` channels (replies to one process) are not listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import time
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, DeliveredMessage

from channels_kit.layers.base import QueueFigures, WorkerState
from channels_kit.layers.rabbitmq.layer import RabbitMQChannelLayer, _Connection

# How far back a reader looks for states: longer than any worker's state TTL.
STATE_WINDOW_SECONDS = 120.0
# A read of the stream ends after this long without a new entry, or after READ_LIMIT.
READ_IDLE_SECONDS = 0.15
READ_LIMIT_SECONDS = 3.0
STREAM_ARGUMENTS = {
    "x-queue-type": "stream",
    "x-max-age": "300s",
    "x-stream-max-segment-size-bytes": 1_000_000,
}


STATE_FIELDS = frozenset(field.name for field in dataclasses.fields(WorkerState))


def state_from_entry(entry: dict[str, Any]) -> WorkerState:
    """A worker state from its stream entry (which adds ``expires``)."""
    fields = {key: value for key, value in entry.items() if key in STATE_FIELDS}
    return WorkerState(**(fields | {"channels": tuple(entry["channels"])}))


class RabbitMQInspector:
    """The ``LayerInspector`` of ``RabbitMQChannelLayer``: one server."""

    shards = 1
    # Reports say nothing more: a note marks figures that are one process's own (in-memory).
    note = ""
    shares_worker_state = True

    def __init__(self, layer: RabbitMQChannelLayer) -> None:
        self.layer = layer
        self.prefix = layer.prefix
        self.stream = f"{layer.prefix}.kit.worker-states"

    async def _declare_stream(self, connection: _Connection) -> AbstractChannel:
        ops = await connection.ops_channel()
        if self.stream not in connection.declared:
            await ops.queue_declare(self.stream, durable=True, arguments=STREAM_ARGUMENTS)
            connection.declared.add(self.stream)
        return ops

    async def _append(self, entry: dict[str, Any]) -> None:
        body = json.dumps(entry).encode()

        async def append(connection: _Connection) -> None:
            await self._declare_stream(connection)
            assert connection.publish is not None
            await connection.publish.basic_publish(body, routing_key=self.stream)

        await self.layer.in_connection(append)

    async def save_worker_state(self, state: WorkerState, ttl: float) -> None:
        await self._append(dataclasses.asdict(state) | {"expires": time.time() + ttl})

    async def delete_worker_state(self, host: str, pid: int) -> None:
        await self._append({"host": host, "pid": pid, "deleted": True, "updated": time.time()})

    async def _read_stream(self, since: float) -> list[dict[str, Any]]:
        """Every entry appended after ``since`` (epoch seconds), oldest first."""

        async def read(connection: _Connection) -> list[dict[str, Any]]:
            await self._declare_stream(connection)
            channel = await connection.connection.channel(publisher_confirms=False)
            entries: list[dict[str, Any]] = []
            arrived = asyncio.Event()

            async def collect(message: DeliveredMessage) -> None:
                entries.append(json.loads(message.body))
                arrived.set()
                assert message.delivery_tag is not None
                await channel.basic_ack(message.delivery_tag)

            try:
                await channel.basic_qos(prefetch_count=500)
                offset = datetime.datetime.fromtimestamp(since, datetime.UTC)
                await channel.basic_consume(self.stream, collect, arguments={"x-stream-offset": offset})
                deadline = time.monotonic() + READ_LIMIT_SECONDS
                while time.monotonic() < deadline:
                    arrived.clear()
                    try:
                        await asyncio.wait_for(arrived.wait(), READ_IDLE_SECONDS)
                    except TimeoutError:
                        break
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
            return entries

        return await self.layer.in_connection(read)

    async def worker_states(self) -> list[WorkerState]:
        now = time.time()
        latest: dict[tuple[str, int], dict[str, Any]] = {}
        for entry in await self._read_stream(now - STATE_WINDOW_SECONDS):
            key = (entry["host"], entry["pid"])
            if key not in latest or entry["updated"] >= latest[key]["updated"]:
                latest[key] = entry
        return [
            state_from_entry(entry)
            for entry in latest.values()
            if not entry.get("deleted") and entry["expires"] > now
        ]

    async def queue_figures(self, now: float) -> list[QueueFigures]:
        channels = sorted({channel for state in await self.worker_states() for channel in state.channels})

        async def figures(connection: _Connection) -> list[QueueFigures]:
            found = []
            for channel in channels:
                ops = await connection.ops_channel()
                queue = self.layer.queue_name(channel)
                try:
                    declared = await ops.queue_declare(queue, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    continue  # nobody sent to it yet
                depth = declared.message_count or 0
                if depth:
                    found.append(QueueFigures(channel, 0, depth, await self._head_age(ops, queue, now)))
            return found

        return await self.layer.in_connection(figures)

    async def _head_age(self, ops: AbstractChannel, queue: str, now: float) -> float:
        """Seconds since the queue's first message was sent: read it, put it back."""
        try:
            message = await ops.basic_get(queue, no_ack=False)
        except aiormq.exceptions.AMQPError:
            return 0.0
        if message.delivery_tag is None:  # emptied meanwhile
            return 0.0
        await ops.basic_nack(message.delivery_tag, requeue=True)
        sent = message.header.properties.timestamp
        return max(0.0, now - sent.timestamp()) if sent else 0.0

    async def close(self) -> None:
        await self.layer.close()
