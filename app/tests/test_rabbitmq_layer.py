"""The RabbitMQ layer beyond the conformance suite, on a real RabbitMQ server: a receiving
process killed, a stopping worker's fetched messages, a connection cut (and the server's
queues lost with it, as in a restart), idle connections kept by heartbeats."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from urllib.parse import urlsplit, urlunsplit

import pytest

from channels_kit.layers.rabbitmq import RabbitMQChannelLayer
from channels_kit.layers.rabbitmq.layer import redacted, with_heartbeat
from channels_kit.observe.status import gather_status
from tests.conftest import required_env
from tests.helpers import BlockedWorker, run


@pytest.fixture
def url() -> str:
    return required_env("TEST_RABBITMQ_URL")


class Proxy:
    """A TCP relay to the server whose connections the test can cut at once."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname, parts.port or 5672)
        self.parts = parts
        self.pipes: list[asyncio.StreamWriter] = []
        self.down = False

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        credentials = self.parts.netloc.rsplit("@", 1)[0]
        return urlunsplit(self.parts._replace(netloc=f"{credentials}@127.0.0.1:{port}"))

    async def _handle(self, client_reader, client_writer) -> None:
        if self.down:  # the "server" is away: connections are refused
            client_writer.transport.abort()
            return
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        self.pipes += [client_writer, server_writer]

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.transport.abort()

        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    def cut(self) -> None:
        for writer in self.pipes:
            writer.transport.abort()
        self.pipes.clear()

    async def stop(self) -> None:
        self.cut()
        self.server.close()


def test_killed_receiver_loses_nothing_it_had_not_returned(url, prefix):
    """A receiving process holds the next message (prefetch) when it is SIGKILLed: RabbitMQ
    gives that message to another process; only what the dead process returned is gone."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from channels_kit.layers.rabbitmq import RabbitMQChannelLayer
        layer = RabbitMQChannelLayer(url=sys.argv[1], prefix=sys.argv[2])
        async def main():
            print((await layer.receive("jobs"))["n"], flush=True)
            await asyncio.sleep(60)  # its consumer meanwhile fetches the next message
        asyncio.run(main())
        """
    )
    layer = RabbitMQChannelLayer(url=url, prefix=prefix)

    async def send_all():
        for n in range(5):
            await layer.send("jobs", {"type": "job", "n": n})

    run(send_all())
    child = subprocess.Popen([sys.executable, "-c", script, url, prefix], stdout=subprocess.PIPE, text=True)
    try:
        taken = int(child.stdout.readline())
        asyncio.run(asyncio.sleep(0.5))  # the next message is in the child's buffer now
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)

    async def receive_rest():
        got = [(await asyncio.wait_for(layer.receive("jobs"), 10))["n"] for _ in range(4)]
        await layer.flush()
        return got

    assert sorted([taken, *run(receive_rest())]) == list(range(5))


def test_requeue_pending_gives_back_what_was_fetched(url, prefix):
    worker, other = RabbitMQChannelLayer(url=url, prefix=prefix), RabbitMQChannelLayer(url=url, prefix=prefix)

    async def scenario():
        for n in range(3):
            await worker.send("jobs", {"type": "job", "n": n})
        first = (await worker.receive("jobs"))["n"]
        await asyncio.sleep(0.3)  # the consumer fetched the next one meanwhile
        returned = await worker.requeue_pending()
        rest = [(await asyncio.wait_for(other.receive("jobs"), 10))["n"] for _ in range(2)]
        await other.flush()
        return first, returned, rest

    first, returned, rest = run(scenario())
    assert returned == 1
    assert sorted([first, *rest]) == [0, 1, 2]


def test_connection_cut_and_queues_lost_then_everything_flows_again(url, prefix):
    """The connection is cut while a receive waits, and the waiting channel's queue is deleted
    meanwhile (a RabbitMQ restart loses both): the layer reconnects, declares the queue and
    binds its group again, and the waiting receive gets the next group message."""

    async def scenario():
        proxy = Proxy(url)
        proxied = RabbitMQChannelLayer(url=await proxy.start(), prefix=prefix, reconnect_timeout=20)
        direct = RabbitMQChannelLayer(url=url, prefix=prefix)
        channel = await proxied.new_channel()
        await proxied.group_add("room", channel)
        waiter = asyncio.ensure_future(proxied.receive(channel))
        await asyncio.sleep(0.3)
        proxy.down = True
        proxy.cut()
        # While it is away, the server loses the channel's queue and the groups exchange (and
        # so the binding), as a restart does.
        direct._queues.add(proxied.queue_name(channel))
        await direct.flush()
        await asyncio.sleep(0.5)
        proxy.down = False
        await proxied.send("kick", {"type": "kick"})  # reconnects (and restores the binding)
        for _ in range(50):  # the waiting receive's consumer comes back on its own
            await direct.group_send("room", {"type": "chat", "text": "after"})
            done, _ = await asyncio.wait([waiter], timeout=0.2)
            if done:
                break
        assert waiter.done(), "the waiting receive never got a message after the reconnect"
        assert waiter.result()["text"] == "after"
        assert (await asyncio.wait_for(proxied.receive("kick"), 5))["type"] == "kick"
        await proxied.flush()
        await proxy.stop()

    run(scenario())


def test_a_waiting_receive_outlasts_a_server_away_longer_than_the_reconnect_timeout(url, prefix):
    """Nothing but a waiting receive in the process, and the server away for three times the
    reconnect timeout: the layer keeps trying, and the receive gets the next message."""

    async def scenario():
        proxy = Proxy(url)
        proxied = RabbitMQChannelLayer(url=await proxy.start(), prefix=prefix, reconnect_timeout=1)
        direct = RabbitMQChannelLayer(url=url, prefix=prefix)
        waiter = asyncio.ensure_future(proxied.receive("jobs"))
        await asyncio.sleep(0.3)
        proxy.down = True
        proxy.cut()
        await asyncio.sleep(3)  # the first reconnect gave up after 1 s
        proxy.down = False
        await direct.send("jobs", {"type": "job", "n": 1})
        message = await asyncio.wait_for(waiter, 15)
        await direct.flush()
        await proxy.stop()
        return message

    assert run(scenario())["n"] == 1


def test_a_consuming_channel_the_broker_closed_is_replaced(url, prefix):
    """The broker closes the consuming channel (a channel error: an unknown delivery tag)
    while the connection stays open: the connection is replaced at once, and a waiting
    receive gets the next message another process sends (before, the reader believed itself
    subscribed and waited for ever)."""
    layer = RabbitMQChannelLayer(url=url, prefix=prefix)
    other = RabbitMQChannelLayer(url=url, prefix=prefix)

    async def scenario():
        await layer.send("jobs", {"type": "job", "n": 0})
        assert (await layer.receive("jobs"))["n"] == 0
        state = layer._states[asyncio.get_running_loop()]
        before = state.connection
        waiter = asyncio.ensure_future(layer.receive("jobs"))
        await asyncio.sleep(0.3)
        await before.consume.basic_ack(987654, wait=False)  # PRECONDITION_FAILED: channel closed
        for _ in range(50):
            if before.consume.is_closed:
                break
            await asyncio.sleep(0.1)
        assert before.consume.is_closed
        for _ in range(100):
            if state.connection is not before and state.connection is not None and state.connection.is_open:
                break
            await asyncio.sleep(0.1)
        replaced = state.connection is not before and before.connection.is_closed
        await other.send("jobs", {"type": "job", "n": 1})
        message = await asyncio.wait_for(waiter, 15)
        await layer.flush()
        return message, replaced

    message, replaced = run(scenario())
    assert message["n"] == 1
    assert replaced, "the connection whose consuming channel closed is still in use"


def test_idle_connection_outlives_heartbeats(url, prefix):
    """With a 1 s heartbeat, 4 s of silence keep the same connection (no reconnect)."""
    layer = RabbitMQChannelLayer(url=url, prefix=prefix, heartbeat=1)

    async def scenario():
        await layer.send("idle", {"type": "before"})
        state = layer._states[asyncio.get_running_loop()]
        generation = state.generation
        await asyncio.sleep(4)
        await layer.send("idle", {"type": "after"})
        assert [(await layer.receive("idle"))["type"] for _ in range(2)] == ["before", "after"]
        assert state.generation == generation, "the idle connection was lost and reopened"
        await layer.flush()

    run(scenario())


def test_url_helpers_keep_the_password_out_of_messages():
    assert "heartbeat=7" in with_heartbeat("amqp://u:p@h:5672/v", 7)
    assert "heartbeat=3" in with_heartbeat("amqp://u:p@h/?heartbeat=3", 7)
    assert redacted("amqp://kit:s3cret@rabbitmq:5672/") == "amqp://kit:***@rabbitmq:5672/"


def test_status_of_a_running_worker_on_rabbitmq(url, prefix):
    """Busy worker, queue depth and age, two readers at once seeing the same states (the
    stream is read, never consumed), and the state withdrawn on a clean exit."""

    async def scenario():
        layer = RabbitMQChannelLayer(url=url, prefix=prefix)
        async with BlockedWorker(layer, jobs=4) as blocked:
            busy = await blocked.busy_status(poll=0.1)
            first, second = await asyncio.gather(gather_status(layer), gather_status(layer))
            await blocked.release()
        after = await gather_status(layer)
        await layer.flush()
        return busy, first, second, after

    busy, first, second, after = run(scenario())
    [state] = busy.workers
    assert state.channels == ("jobs",) and state.busy == 1 and state.pid == os.getpid()
    # One running, one prefetched by the worker's consumer, the rest queued on the server.
    assert 1 <= busy.total("jobs").depth <= 3, busy
    assert [w.pid for w in first.workers] == [w.pid for w in second.workers] == [os.getpid()]
    assert after.workers == []


def test_an_operation_whose_channel_another_ones_error_closed_is_tried_again(url, prefix):
    """A channel error (here: a queue declared with other arguments) makes the broker close
    the operations channel, failing every operation pending on it; the others must go on
    (a relayed event failing that way closed its socket with 4500 during a broker restart)."""

    async def scenario():
        first = RabbitMQChannelLayer(url=url, prefix=prefix, capacity=100)
        other = RabbitMQChannelLayer(url=url, prefix=prefix, capacity=5)
        try:
            await first.send("mismatch", {"type": "x"})  # its queue: x-max-length 100
            results = await asyncio.gather(
                other.send("mismatch", {"type": "x"}),  # x-max-length 5: refused, channel closed
                *(other.send(f"ok{n}", {"type": "ok", "n": n}) for n in range(20)),
                return_exceptions=True,
            )
            assert isinstance(results[0], RuntimeError) and "other arguments" in str(results[0])
            assert results[1:] == [None] * 20, [r for r in results[1:] if r is not None]
            for n in range(20):
                assert (await other.receive(f"ok{n}"))["n"] == n
        finally:
            await first.flush()
            await first.close()
            await other.close()

    run(scenario())
