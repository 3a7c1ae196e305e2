"""Relay mode under faults as they happen (#27): a slow group join, skewed clocks, a POST whose
worker died, forged scopes. Interfaces and workers in process on a real Redis (``test_relay``'s
``Cluster``), each with a layer of its own."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.layers import InMemoryChannelLayer

from channels_kit.relay.clock import LayerClock
from channels_kit.relay.handler import RelayHandler
from channels_kit.relay.protocol import ScopeError, request_id, scope_from_wire, scope_to_wire
from tests.conftest import required_env
from tests.relay_client import Socket, http_request, http_scope
from tests.test_relay import RESEND, Cluster, http_seen, run, take_and_die

# --- workers keep only the scope keys an interface sends ------------------------------------------


def test_a_forged_scope_loses_every_key_no_interface_sends(caplog):
    wire = scope_to_wire(http_scope("/x"), {"relay": {"interface": "daphne/x", "channel": "relay.a!c.b"}})
    forged = wire | {"user": {"is_superuser": True}, "session": {"uid": 1}, "state": {}, "url_route": {}}
    scope = scope_from_wire(forged)
    assert not {"user", "session", "state", "url_route"} & set(scope)
    assert scope["path"] == "/x" and scope["relay"]["channel"] == "relay.a!c.b"
    assert "dropped scope keys no interface server sends: session, state, url_route, user" in caplog.text


@pytest.mark.parametrize(
    "key, value",
    [
        ("headers", [["host", "example.com"]]),  # not bytes
        ("headers", "host: x"),
        ("client", ["10.0.0.1", "80"]),
        ("path", b"/x"),
        ("type", "lifespan"),
        ("relay", {"channel": ["not", "text"]}),
        ("subprotocols", [1]),
    ],
)
def test_a_scope_key_of_the_wrong_type_is_refused(key, value):
    wire = scope_to_wire(http_scope("/x")) | {key: value}
    with pytest.raises(ScopeError, match=key):
        scope_from_wire(wire)


def test_a_worker_drops_a_message_with_a_forged_scope_unrun_and_runs_the_rest_without_extra_keys():
    seen: list[dict] = []

    async def app(scope, receive, send):
        seen.append(scope)

    async def scenario():
        layer = InMemoryChannelLayer()  # where the relay.done of the run goes
        handler = RelayHandler(app, layer)
        scope = scope_to_wire(http_scope("/")) | {"user": "admin"}
        relay = {"reply": "relay.x!c.y", "scope": scope, "deadline": time.time() + 60, "seq": 1}
        message = {"type": "relay.work", "relay": relay, "event": {"type": "websocket.disconnect"}}
        assert await handler("websocket.disconnect", message) is True
        assert len(seen) == 1 and "user" not in seen[0]
        assert (await layer.receive("relay.x!c.y"))["type"] == "relay.done"
        relay["scope"] = scope | {"headers": [["host", "x"]]}
        assert await handler("websocket.disconnect", message) is False
        assert (len(seen), handler.refused) == (1, 1)

    asyncio.run(scenario())


# --- a group join that waits (its shard is down) does not run the connect again ------------------


def test_a_slow_group_join_runs_the_connect_handler_once(redis_url):
    """The interface joins the room's group only after 2.5 s (as while the group's shard is
    down), ten start windows: the worker's relay.done, read while the join waits, keeps the
    connect from being sent again. Before: sent again every window, one hello frame each."""

    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=30, **RESEND)
        group_add = relay.layer.group_add

        async def slow_group_add(group, channel):
            await asyncio.sleep(2.5)
            await group_add(group, channel)

        relay.layer.group_add = slow_group_add
        cluster.start_worker("w1")
        started = time.monotonic()
        socket = Socket(relay, "slow-join")
        hello = await socket.opened()
        assert hello["worker"] == "w1"
        assert time.monotonic() - started >= 2.5, "accepted before the socket was in its group"
        with pytest.raises(TimeoutError):
            extra = await socket.next(timeout=1.5)
            raise AssertionError(f"the connect ran again: {extra}")
        assert relay.stats.websocket_events_resent == 0
        socket.send({"n": 1})
        assert (await socket.json())["count"] == 1
        await socket.leave()

    run(redis_url, scenario)


# --- clocks: the layer's time, not the hosts' -------------------------------------------------------


def test_the_layer_clock_reads_the_redis_server_time(redis_url):
    async def scenario(cluster: Cluster):
        ahead = LayerClock(cluster.layer(), wall=lambda: time.time() + 30)
        await ahead.ready()
        assert ahead.samples == 1 and ahead.source == "the Redis server's TIME"
        # The Redis server runs on this machine: its clock is ours, 30 s behind the skewed host.
        assert abs(ahead.offset + 30) < 0.5 and abs(ahead.now() - time.time()) < 0.5
        ahead.close()

    run(redis_url, scenario)


@pytest.mark.parametrize("skew", [30.0, -30.0])
def test_a_worker_whose_clock_is_30_s_off_answers_at_once_and_runs_everything_once(redis_url, skew):
    """Start windows of 0.5 s against a worker 30 s ahead (every copy looked stale: each event
    waited for its resends) or behind (a late copy looked fresh: it ran twice)."""

    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=30, **RESEND)
        cluster.start_worker("skewed", skew=skew)
        started = time.monotonic()
        socket = Socket(relay, f"skew{skew:.0f}".replace("-", "m"))
        assert (await socket.opened())["worker"] == "skewed"
        for n in range(1, 6):
            socket.send({"n": n})
            assert (await socket.json(timeout=2))["count"] == n
        before = len(http_seen)
        status, _, body = await http_request(relay, "/skewed", b"once", "POST")
        assert (status, json.loads(body)["worker"]) == (201, "skewed")
        took = time.monotonic() - started
        assert took < 3, f"a connect, 5 frames and a request took {took:.1f} s"
        assert relay.stats.websocket_events_resent == relay.stats.http_resent == 0
        assert [seen[1]["path"] for seen in http_seen[before:]] == ["/skewed"]
        handler = cluster.workers["skewed"][0].slots[0].handler
        assert handler.stale == handler.expired == 0
        await socket.leave()

    run(redis_url, scenario)


def test_with_the_hosts_own_clocks_a_worker_30_s_ahead_drops_every_copy(redis_url):
    """The control: the same worker reading its own clock (the layer's not measured) finds
    every message past its start_by, so nothing runs until the deadline."""

    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=3, **RESEND)
        worker = cluster.start_worker("skewed", skew=30.0)
        worker.slots[0].handler.clock.read_server = None  # what RabbitMQ gets
        status, _, _ = await http_request(relay, "/never", b"", "GET")
        assert status == 503
        handler = worker.slots[0].handler
        assert handler.stale + handler.expired >= 2 and relay.stats.http_resent >= 1

    run(redis_url, scenario)


# --- HTTP: what is sent again, and what a POST whose worker died gets ----------------------------


def test_a_post_whose_worker_died_mid_run_gets_502_and_is_not_sent_again(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=30, **RESEND)
        dying = asyncio.ensure_future(take_and_die(cluster, "http.request", beats=0.6))
        started = time.monotonic()
        before = len(http_seen)
        request = asyncio.ensure_future(http_request(relay, "/order", b"pay", "POST"))
        first = await asyncio.wait_for(dying, 5)  # taken, alive for 0.6 s, then silent for good
        cluster.start_worker("w2")  # a live worker from now on: the POST is still not sent again
        status, headers, body = await asyncio.wait_for(request, 10)
        assert status == 502 and b"may have run in part" in body and b"RELAY_RESEND_METHODS" in body
        assert headers["x-relayed-by"] == "daphne/test"
        assert time.monotonic() - started < 0.6 + 4 * 0.2 + 1.0
        assert (relay.stats.http_resent, relay.stats.http_worker_lost) == (0, 1)
        assert "start_by" not in first["relay"], "a POST taken late must still run"
        await asyncio.sleep(0.5)
        assert not [seen for seen in http_seen[before:] if seen[1]["path"] == "/order"]

    run(redis_url, scenario)


def test_a_post_the_project_says_is_safe_is_sent_again_with_the_same_request_id(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=30, resend_methods=frozenset({"POST"}), **RESEND)
        dying = asyncio.ensure_future(take_and_die(cluster, "http.request", beats=0.6))
        request = asyncio.ensure_future(http_request(relay, "/safe", b"body", "POST"))
        first = await asyncio.wait_for(dying, 5)
        cluster.start_worker("w2")
        status, _, _ = await asyncio.wait_for(request, 10)
        assert status == 201 and relay.stats.http_resent == 1
        ran = [seen[1] for seen in http_seen if seen[1]["path"] == "/safe"]
        assert len(ran) == 1
        assert request_id(ran[0]) == request_id(scope_from_wire(first["relay"]["scope"])) is not None

    run(redis_url, scenario)


def test_the_layer_clock_reads_the_postgresql_server_clock(prefix):
    from channels_kit.layers.postgres import PostgresChannelLayer

    layer = PostgresChannelLayer(url=required_env("TEST_POSTGRES_URL"), prefix=prefix)

    async def scenario():
        behind = LayerClock(layer, wall=lambda: time.time() - 30)
        await behind.ready()
        assert behind.samples == 1 and behind.source == "the PostgreSQL server's clock"
        assert abs(behind.offset - 30) < 0.5
        behind.close()
        await layer.close()

    asyncio.run(scenario())


def test_on_rabbitmq_the_hosts_clocks_are_used_and_said_so(prefix):
    from channels_kit.layers.rabbitmq import RabbitMQChannelLayer

    layer = RabbitMQChannelLayer(url=required_env("TEST_RABBITMQ_URL"), prefix=prefix)
    clock = LayerClock(layer)
    assert clock.read_server is None and "keep the hosts' clocks in sync" in clock.source
    asyncio.run(clock.ready())  # at once: nothing to read
    assert clock.offset == 0.0


def test_relay_resend_methods_is_checked_at_start():
    from channels_kit.relay.settings import resend_methods

    assert resend_methods("get, Post") == {"GET", "POST"} and resend_methods("-") == frozenset()
    with pytest.raises(ValueError, match=r"RELAY_RESEND_METHODS='GET P0ST'.*P0ST is not an HTTP method"):
        resend_methods("GET P0ST")
