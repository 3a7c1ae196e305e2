"""Relay mode in process: interface applications and workers on a real Redis.

Each "process" (an interface server, a worker) has a layer instance of its own, so
they talk only through Redis, as separate containers do. The server side of an
interface (Daphne) is played by queues: what Daphne would put into the
application's ``receive`` and collect from its ``send``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path

from channels_kit.layers.redis import RedisChannelLayer
from channels_kit.relay.consumer_state import MAX_STATE_BYTES, snapshot
from channels_kit.relay.handler import BATCH_MAX_BYTES, RelayHandler, ReplyOutbox
from channels_kit.relay.interface import RelayApplication, RelaySettings
from channels_kit.relay.protocol import WORK_CHANNELS, scope_from_wire, scope_to_wire, unbatch
from channels_kit.worker import KitWorker
from tests.relay_client import Socket, http_request, http_scope

# --- the project application the workers run ---------------------------------------------

# What the HTTP application saw, for assertions: (worker name, scope, body) and disconnects.
http_seen: list[tuple[str, dict, bytes]] = []
http_disconnects: list[str] = []
# The consumers' disconnects: (room, frames handled, worker name).
ws_disconnects: list[tuple[str, int, str]] = []


async def http_app(scope, receive, send):
    request = await receive()
    http_seen.append((scope["worker"], scope, request.get("body", b"")))
    if scope["path"] == "/wait-for-disconnect":
        message = await receive()
        http_disconnects.append(message["type"])
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(float(scope["query_string"].decode() or 1))
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    body = json.dumps({"worker": scope["worker"], "path": scope["path"], "body": request["body"].decode()})
    await send(
        {"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body.encode()})


class RoomConsumer(AsyncJsonWebsocketConsumer):
    """Joins a room group; counts frames in ``self.count`` (state that must survive workers)."""

    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.count = 0
        await self.channel_layer.group_add(f"room.{self.room}", self.channel_name)
        await self.accept()
        await self.send_json(
            {"type": "hello", "worker": self.scope["worker"], "relay": self.scope.get("relay")}
        )

    async def receive_json(self, content, **kwargs):
        self.count += 1
        group = f"room.{self.room}"
        if "fanout" in content:
            await self.channel_layer.group_send(
                group, {"type": "websocket.send", "text": json.dumps(content)}
            )
        elif "note" in content:
            await self.channel_layer.group_send(group, {"type": "room.note", "note": content["note"]})
        elif "boom" in content:
            raise RuntimeError("consumer failure")
        elif "sleep" in content:
            await asyncio.sleep(content["sleep"])
        else:
            await self.send_json({"echo": content, "count": self.count, "worker": self.scope["worker"]})

    async def room_note(self, event):
        await self.send_json({"note": event["note"], "count": self.count, "worker": self.scope["worker"]})

    async def disconnect(self, code):
        ws_disconnects.append((self.room, self.count, self.scope["worker"]))
        await self.channel_layer.group_discard(f"room.{self.room}", self.channel_name)


def project_application(worker_name: str):
    router = ProtocolTypeRouter(
        {"http": http_app, "websocket": URLRouter([path("ws/<str:room>/", RoomConsumer.as_asgi())])}
    )

    async def app(scope, receive, send):
        await router(dict(scope, worker=worker_name), receive, send)

    return app


# --- processes -------------------------------------------------------------------------------


class Cluster:
    """Interface applications and workers sharing one Redis under a test's own prefix."""

    def __init__(self, redis_url: str, timeout: float = 5.0) -> None:
        self.redis_url = redis_url
        self.prefix = f"relay-test-{uuid.uuid4().hex[:8]}"
        self.timeout = timeout
        self.workers: dict[str, tuple[KitWorker, asyncio.Task]] = {}
        self.layers: list[RedisChannelLayer] = []

    def layer(self) -> RedisChannelLayer:
        # A short socket timeout keeps blocking reads short, so stopping a worker is quick.
        hosts = [{"address": self.redis_url, "socket_timeout": 1.0}]
        layer = RedisChannelLayer(hosts=hosts, prefix=self.prefix, group_expiry=300)
        self.layers.append(layer)
        return layer

    def interface(self, **settings) -> RelayApplication:
        settings.setdefault("timeout", self.timeout)
        # The test workers publish no state (publish_state=False): no watch, unless asked.
        settings.setdefault("no_worker_wait", None)
        return RelayApplication(
            self.layer(), RelaySettings(identity="daphne/test", group_refresh=0, **settings)
        )

    async def open_socket(
        self, room: str, concurrency: int = 2, **settings
    ) -> tuple[RelayApplication, Socket]:
        """An interface application (``settings``), a worker (w1) behind it and a socket opened
        on ``room``."""
        relay = self.interface(**settings)
        self.start_worker("w1", concurrency=concurrency)
        socket = Socket(relay, room)
        await socket.opened()
        return relay, socket

    def start_worker(self, name: str, channels=WORK_CHANNELS, skew: float = 0.0, **options) -> KitWorker:
        """A worker serving ``channels``; ``skew``: seconds its host's clock is off."""
        layer = self.layer()
        app = project_application(name)
        handler = RelayHandler(app, layer, taken_notice=0.1)
        handler.clock.wall = lambda: time.time() + skew
        options.setdefault("concurrency", 2)
        options.setdefault("publish_state", False)
        # Serving at once, as the relay's short test windows expect: the start-up probe of
        # the layer is test_worker's subject.
        options.setdefault("layer_wait", None)
        worker = KitWorker(
            application=app,
            channels=channels,
            channel_layer=layer,
            relay_handler=handler,
            relay_channels=WORK_CHANNELS,
            **options,
        )
        self.workers[name] = (worker, asyncio.ensure_future(worker.arun()))
        return worker

    async def stop_worker(self, name: str) -> None:
        worker, task = self.workers.pop(name)
        worker.request_stop("test")
        await asyncio.wait_for(task, 10)

    async def close(self) -> None:
        for name in list(self.workers):
            await self.stop_worker(name)
        for layer in self.layers:
            await layer.flush()
            await layer.close_pools()


def run(redis_url: str, scenario: Callable, **cluster_options) -> None:
    async def main():
        cluster = Cluster(redis_url, **cluster_options)
        try:
            await asyncio.wait_for(scenario(cluster), 60)
        finally:
            await cluster.close()

    asyncio.run(main())


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- tests ---------------------------------------------------------------------------------------


def test_scope_travels_intact():
    scope = http_scope("/a/b?x=1") | {"state": object(), "extensions": {"x": object()}}
    wire = scope_to_wire(scope, {"relay": {"interface": "daphne/x"}})
    assert "state" not in wire and "extensions" not in wire
    back = scope_from_wire(wire)
    assert back["headers"] == scope["headers"]
    assert back["client"] == ("10.1.2.3", 40000) and back["query_string"] == b"x=1"
    assert back["relay"] == {"interface": "daphne/x"}


def test_http_request_runs_on_a_worker(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface()
        cluster.start_worker("w1")
        status, headers, body = await http_request(relay, "/page?x=1", b"hello", "POST")
        assert status == 201
        assert headers["x-relayed-by"] == "daphne/test"
        assert json.loads(body) == {"worker": "w1", "path": "/page", "body": "hello"}
        worker, scope, seen_body = http_seen[-1]
        assert (worker, seen_body) == ("w1", b"hello")
        assert scope["client"] == ("10.1.2.3", 40000) and (b"x-test", b"yes") in scope["headers"]
        assert scope["relay"]["interface"] == "daphne/test"

    run(redis_url, scenario)


def test_no_worker_means_503_after_the_timeout_and_the_request_never_runs_late(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=0.5)
        started = time.monotonic()
        status, _, body = await http_request(relay, "/late")
        assert status == 503 and b"no worker answered within 0.5 s" in body
        assert 0.5 <= time.monotonic() - started < 2.0
        before = len(http_seen)
        worker = cluster.start_worker("w1")
        status, _, _ = await http_request(relay, "/now")
        assert status == 201
        # The worker found the stale request first and dropped it unrun.
        assert [scope["path"] for _, scope, _ in http_seen[before:]] == ["/now"]
        assert worker.slots[0].handler.expired == 1

    run(redis_url, scenario)


def test_health_is_answered_by_the_interface_and_bodies_are_bounded(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface(max_body=10)
        status, headers, body = await http_request(relay, "/healthz")
        assert status == 200 and json.loads(body)["mode"] == "relay"
        assert headers["x-served-by"] == "daphne/test"
        status, _, _ = await http_request(relay, "/upload", b"x" * 11, "POST")
        assert status == 413

    run(redis_url, scenario)


def test_application_errors_are_500_and_the_worker_goes_on(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface()
        worker = cluster.start_worker("w1", concurrency=1)
        assert (await http_request(relay, "/boom"))[0] == 500
        assert (await http_request(relay, "/fine"))[0] == 201
        stats = worker.stats["http.request"]
        # Counted once the handler returns, just after the response went out.
        await eventually(lambda: (stats.failed, stats.handled) == (1, 1))

    run(redis_url, scenario)


def test_a_client_leaving_reaches_the_application_on_the_worker(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface()
        cluster.start_worker("w1")
        before = len(http_disconnects)
        status, _, _ = await http_request(relay, "/wait-for-disconnect", leave_after=0.5)
        assert status is None
        await eventually(lambda: len(http_disconnects) > before)
        assert http_disconnects[-1] == "http.disconnect"

    run(redis_url, scenario)


def test_a_draining_worker_finishes_the_request_in_hand(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface()
        cluster.start_worker("w1", concurrency=1)
        request = asyncio.ensure_future(http_request(relay, "/slow?1"))
        await eventually(lambda: cluster.workers["w1"][0].busy_count() == 1)
        await cluster.stop_worker("w1")  # SIGTERM's path: drain, then return
        assert request.done() and request.result()[0] == 201

    run(redis_url, scenario)


def test_websocket_state_survives_any_worker_taking_the_next_event(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface()
        cluster.start_worker("w1", concurrency=1)
        socket = Socket(relay, "lobby")
        hello = await socket.opened()
        assert hello["worker"] == "w1" and hello["relay"]["interface"] == "daphne/test"
        socket.send({"n": 1})
        assert (await socket.json())["count"] == 1
        # The worker that ran connect and the first frame goes; another one carries on.
        await cluster.stop_worker("w1")
        cluster.start_worker("w2", concurrency=1)
        socket.send({"n": 2})
        reply = await socket.json()
        assert (reply["count"], reply["worker"], reply["echo"]) == (2, "w2", {"n": 2})
        await socket.leave()

    run(redis_url, scenario)


def test_group_fan_out_costs_one_message_per_interface(redis_url):
    async def scenario(cluster: Cluster):
        first, second = cluster.interface(), cluster.interface()
        cluster.start_worker("w1")
        sockets = [Socket(first, "big") for _ in range(3)] + [Socket(second, "big") for _ in range(2)]
        for socket in sockets:
            await socket.opened()
        layer = cluster.layer()
        group_key = layer._group_key("room.big")
        members = await layer.connection(0).zrange(group_key, 0, -1)
        # Two interface memberships, not five socket memberships.
        assert len(members) == 2 and all(m.decode().startswith("relay.") for m in members)
        sockets[0].send({"fanout": "to all"})
        for socket in sockets:
            assert await socket.json() == {"fanout": "to all"}
        registries = [await app.registry() for app in (first, second)]
        assert [r.group_messages for r in registries] == [1, 1]
        # Sockets leave: the memberships follow, without waiting for any worker.
        for socket in sockets[:3]:
            await socket.leave()
        await eventually(lambda: len(registries[0].joined) == 0)
        assert len(await layer.connection(0).zrange(group_key, 0, -1)) == 1
        for socket in sockets[3:]:
            await socket.leave()
        await eventually(lambda: len(registries[1].joined) == 0)
        assert await layer.connection(0).zrange(group_key, 0, -1) == []

    run(redis_url, scenario)


def test_a_socket_the_server_cancels_leaves_its_groups(redis_url):
    async def scenario(cluster: Cluster):
        relay, socket = await cluster.open_socket("cancelled")
        registry = await relay.registry()
        assert registry.joined == {"room.cancelled"}
        socket.task.cancel()  # as Daphne does with an application past its close timeout
        await eventually(lambda: not registry.joined)

    run(redis_url, scenario)


def test_other_group_events_run_the_consumer_handler_on_a_worker(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface()
        cluster.start_worker("w1")
        alice, bob = Socket(relay, "notes"), Socket(relay, "notes")
        await alice.opened()
        await bob.opened()
        bob.send({"x": 1})
        assert (await bob.json())["count"] == 1
        alice.send({"note": "hi"})
        assert (await alice.json())["note"] == "hi"
        note = await bob.json()
        # Bob's handler ran with Bob's own state (one frame so far).
        assert (note["note"], note["count"]) == ("hi", 1)
        await alice.leave()
        await bob.leave()

    run(redis_url, scenario)


def test_an_event_abandoned_by_a_stopping_worker_does_not_stall_its_socket(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=30)
        worker = cluster.start_worker("w1", concurrency=1, grace_period=0.5)
        socket = Socket(relay, "slow")
        await socket.opened()
        socket.send({"sleep": 30})
        await eventually(lambda: worker.busy_count() == 1)
        await cluster.stop_worker("w1")  # gives up on the 30 s handler after 0.5 s
        cluster.start_worker("w2", concurrency=1)
        started = time.monotonic()
        socket.send({"n": 1})
        reply = await socket.json(timeout=10)
        # Served at once, with the state from before the abandoned event.
        assert (reply["worker"], reply["count"]) == ("w2", 1)
        assert time.monotonic() - started < 5
        await socket.leave()

    run(redis_url, scenario)


def test_no_worker_closes_a_connecting_socket_cleanly(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=0.5)
        socket = Socket(relay, "nobody")
        assert (await socket.next())["type"] == "websocket.accept"
        assert await socket.next() == {"type": "websocket.close", "code": 4503}
        await socket.leave()

    run(redis_url, scenario)


def test_with_no_live_worker_requests_and_sockets_are_refused_at_once_until_one_starts(redis_url):
    """The interface reads the workers' published states: with none serving http.request or
    websocket.connect, a request gets 503 and a socket 4503 after the short no-worker wait,
    not the 30 s timeout; a worker that starts is seen, and served, within a check."""

    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=30, no_worker_wait=0.5, worker_check=0.2)
        started = time.monotonic()
        status, _, body = await http_request(relay, "/nobody")
        assert status == 503 and b"no worker serves http.request" in body
        socket = Socket(relay, "nobody")
        assert (await socket.next())["type"] == "websocket.accept"
        assert await socket.next() == {"type": "websocket.close", "code": 4503}
        await socket.leave()
        assert time.monotonic() - started < 10, "refused after the timeout, not at once"
        assert (relay.stats.http_no_worker, relay.stats.websocket_no_worker) == (1, 1)
        cluster.start_worker("w1", publish_state=True, heartbeat_interval=0.2)
        await eventually(lambda: relay.workers.serves("http.request"), timeout=5)
        assert (await http_request(relay, "/somebody"))[0] == 201
        socket = Socket(relay, "somebody")
        assert (await socket.opened())["type"] == "hello"
        await socket.leave()
        relay.workers.close()

    run(redis_url, scenario)


def test_a_consumer_error_closes_its_socket_with_4500(redis_url):
    async def scenario(cluster: Cluster):
        _, socket = await cluster.open_socket("errors")
        socket.send({"boom": True})
        assert await socket.next() == {"type": "websocket.close", "code": 4500}
        await socket.leave()

    run(redis_url, scenario)


@pytest.mark.parametrize("count", [20])
def test_frames_of_one_socket_run_in_order_across_workers(redis_url, count):
    async def scenario(cluster: Cluster):
        relay = cluster.interface()
        for name in ("w1", "w2", "w3"):
            cluster.start_worker(name)
        socket = Socket(relay, "order")
        await socket.opened()
        for n in range(count):
            socket.send({"n": n})
        replies = [await socket.json() for _ in range(count)]
        assert [r["echo"]["n"] for r in replies] == list(range(count))
        assert [r["count"] for r in replies] == list(range(1, count + 1))
        await socket.leave()

    run(redis_url, scenario)


def test_only_plain_consumer_attributes_travel(caplog):
    class Consumer:
        pass

    consumer = Consumer()
    consumer.__dict__.update(scope={"type": "websocket"}, room="lobby", seen=[1, 2], user=object())
    with caplog.at_level("WARNING", logger="channels_kit.relay"):
        state = snapshot(consumer, initial={})
    assert state == {"room": "lobby", "seen": [1, 2]}
    assert "Consumer.user (object) cannot travel" in caplog.text
    consumer.big = "x" * (MAX_STATE_BYTES + 1)
    with pytest.raises(ValueError, match="more than"):
        snapshot(consumer, initial={})


def test_replies_sent_together_travel_together():
    sent: list[dict] = []

    class Layer:
        async def send(self, channel, message):
            sent.append(message)

    start = {"type": "http.response.start", "status": 200, "headers": []}
    body = {"type": "http.response.body", "body": b"hi", "more_body": False}

    async def scenario():
        outbox = ReplyOutbox(Layer(), "relay.x!c.1", hold=0.05)
        await outbox.send(dict(start))
        await outbox.send(dict(body))
        await outbox.flush()
        assert len(sent) == 1 and unbatch(dict(sent[0])) == [start, body]
        # A handler that goes on working: its frame goes alone once the hold is over.
        await outbox.send({"type": "websocket.send", "text": "working on it"})
        await asyncio.sleep(0.2)
        assert sent[1:] == [{"type": "websocket.send", "text": "working on it"}]
        # Large payloads do not wait.
        await outbox.send({"type": "http.response.body", "body": b"x" * BATCH_MAX_BYTES})
        assert len(sent) == 3

    asyncio.run(scenario())


# --- workers that die holding a message (kill -9): the interface sends it again ----------------

RESEND = {"resend_after": 0.5, "alive_every": 0.2}


async def take_and_die(cluster: Cluster, channel: str, beats: float = 0.0) -> dict:
    """Play a worker killed with ``kill -9``: take the next message of ``channel``, say it is
    alive for ``beats`` seconds (as a live worker would), then go silent for good."""
    layer = cluster.layer()
    message = await layer.receive(channel)
    relay = message["relay"]
    stop = time.monotonic() + beats
    while time.monotonic() < stop:
        await layer.send(relay["reply"], {"type": "relay.alive", "seq": relay.get("seq"), "worker": "dying"})
        await asyncio.sleep(relay["alive_every"])
    return message


def test_an_event_whose_worker_died_at_once_is_sent_again_and_runs_once(redis_url):
    """The worker took the event and died before saying anything: after the start window
    (plus two beats) the interface sends it again; the next worker runs it with the state
    from before, and the socket goes on. The first copy never ran, so nothing ran twice."""

    async def scenario(cluster: Cluster):
        relay, socket = await cluster.open_socket("killed", concurrency=1, timeout=30, **RESEND)
        await cluster.stop_worker("w1")
        dying = asyncio.ensure_future(take_and_die(cluster, "websocket.receive"))
        started = time.monotonic()
        socket.send({"n": 1})
        first = await asyncio.wait_for(dying, 5)
        assert first["relay"]["attempt"] == 1 and first["relay"]["alive_every"] == 0.2
        cluster.start_worker("w2", concurrency=1)
        reply = await socket.json(timeout=10)
        took = time.monotonic() - started
        assert (reply["worker"], reply["echo"], reply["count"]) == ("w2", {"n": 1}, 1)
        assert 0.5 <= took < 5, f"resumed after {took:.1f} s"
        assert relay.stats.websocket_events_resent == 1
        socket.send({"n": 2})
        assert (await socket.json())["count"] == 2
        await socket.leave()

    run(redis_url, scenario)


def test_an_event_whose_worker_falls_silent_mid_run_is_sent_again(redis_url):
    """While the worker beats, the event is not sent again (however long it runs); four
    missed beats after its last one, it is."""

    async def scenario(cluster: Cluster):
        relay, socket = await cluster.open_socket("silent", concurrency=1, timeout=30, **RESEND)
        await cluster.stop_worker("w1")
        dying = asyncio.ensure_future(take_and_die(cluster, "websocket.receive", beats=2.0))
        socket.send({"n": 1})
        await asyncio.sleep(1.8)  # well past the start window (0.5 s + 2 beats)
        assert relay.stats.websocket_events_resent == 0, "sent again while its worker was alive"
        await asyncio.wait_for(dying, 5)
        silent_since = time.monotonic()
        cluster.start_worker("w2", concurrency=1)
        reply = await socket.json(timeout=10)
        assert (reply["worker"], reply["count"]) == ("w2", 1)
        assert time.monotonic() - silent_since < 4
        assert relay.stats.websocket_events_resent == 1
        await socket.leave()

    run(redis_url, scenario)


def test_a_slow_event_on_a_live_worker_runs_once(redis_url):
    """A handler that runs for 2 s, ten start windows: its worker's beats keep it from being
    sent again (mutation-checked: with no beats it is sent again, twice)."""

    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=30, resend_after=0.2, alive_every=0.1)
        for name in ("w1", "w2"):
            cluster.start_worker(name, concurrency=2)
        socket = Socket(relay, "slow-live")
        await socket.opened()
        socket.send({"sleep": 2})
        socket.send({"n": 1})
        reply = await socket.json(timeout=10)
        assert reply["count"] == 2, reply  # the slow event counted once, then this one
        assert relay.stats.websocket_events_resent == 0
        await socket.leave()

    run(redis_url, scenario)


def test_a_copy_taken_after_its_start_by_is_dropped_unrun():
    ran = []

    async def app(scope, receive, send):
        ran.append(scope)

    async def scenario():
        handler = RelayHandler(app, None)  # never reaches the layer
        message = {
            "type": "relay.work",
            "relay": {"reply": "relay.x!c.y", "scope": http_scope("/"), "deadline": time.time() + 60},
            "event": {"type": "http.request", "body": b""},
        }
        message["relay"]["start_by"] = time.time() - 0.01
        assert await handler("http.request", message) is True
        assert (handler.stale, ran) == (1, [])

    asyncio.run(scenario())


def test_a_request_whose_worker_died_is_sent_again(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=30, **RESEND)
        dying = asyncio.ensure_future(take_and_die(cluster, "http.request", beats=0.6))
        request = asyncio.ensure_future(http_request(relay, "/again", b"body", "PUT"))
        await asyncio.wait_for(dying, 5)
        cluster.start_worker("w2")
        status, _, body = await asyncio.wait_for(request, 10)
        assert (status, json.loads(body)["worker"]) == (201, "w2")
        assert relay.stats.http_resent == 1
        assert sum(1 for seen in http_seen if seen[1]["path"] == "/again") == 1

    run(redis_url, scenario)


def test_a_disconnect_whose_worker_died_is_sent_again_and_runs_once(redis_url):
    """The consumer's disconnect is waited for like any event: its worker killed, it runs on
    the next one (it was sent once, and lost, before)."""

    async def scenario(cluster: Cluster):
        relay, socket = await cluster.open_socket("gone", concurrency=1, timeout=30, **RESEND)
        await cluster.stop_worker("w1")
        dying = asyncio.ensure_future(take_and_die(cluster, "websocket.disconnect"))
        await socket.leave()
        first = await asyncio.wait_for(dying, 5)
        assert first["event"]["type"] == "websocket.disconnect"
        cluster.start_worker("w2", concurrency=1)
        await eventually(lambda: ("gone", 0, "w2") in ws_disconnects, timeout=10)
        assert [d for d in ws_disconnects if d[0] == "gone"] == [("gone", 0, "w2")]
        assert relay.stats.websocket_events_resent == 1

    run(redis_url, scenario)


def test_a_stopping_interface_finishes_what_its_closed_sockets_left_and_leaves_its_groups(redis_url):
    """At the server's lifespan shutdown (after its drain closed the sockets), the frames a
    socket left queued and its disconnect still run, in order, before the shutdown returns;
    then the interface leaves its groups, so that no group sends to it any more."""

    async def scenario(cluster: Cluster):
        relay, socket = await cluster.open_socket("leaving", concurrency=1)
        for _ in range(3):
            socket.send({"sleep": 0.3})
        await socket.leave()
        kept = Socket(relay, "kept")
        await kept.opened()
        kept.task.cancel()  # what Daphne does with the sockets left after its drain
        assert not any(d[0] in ("leaving", "kept") for d in ws_disconnects)
        await relay.shutdown(finish=5.0)
        # Not eventually: the shutdown waited for them.
        assert sorted(d[:2] for d in ws_disconnects if d[0] in ("leaving", "kept")) == [
            ("kept", 0),
            ("leaving", 3),
        ]
        layer = cluster.layer()
        for room in ("leaving", "kept"):
            assert await layer.connection(0).zrange(layer._group_key(f"room.{room}"), 0, -1) == []

    run(redis_url, scenario)
