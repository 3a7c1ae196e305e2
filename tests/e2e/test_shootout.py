"""The websocket-shootout protocol on /ws/shootout/ (both modes): echo comes back, and every
broadcast reaches every connected socket exactly once, then its sender's broadcastResult.

A small, bounded version of `make bench-broadcast`'s method: clients connected, 4
broadcasts in flight at a time from random clients, every receipt counted.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter

import websockets

from conftest import WS_URL, parts

pytestmark = parts("direct")

CLIENTS, BROADCASTS, CONCURRENT = 30, 40, 4


class Client:
    def __init__(self) -> None:
        self.broadcasts: Counter[int] = Counter()
        self.results: dict[int, float] = {}
        self.echoes: list[dict] = []
        self.others: list[dict] = []
        self.arrived = asyncio.Event()

    async def open(self) -> None:
        self.socket = await websockets.connect(
            f"{WS_URL}/ws/shootout/", origin="http://localhost", open_timeout=30
        )
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for frame in self.socket:
            message = json.loads(frame)
            kind, payload = message.get("type"), message.get("payload")
            if kind == "broadcast":
                self.broadcasts[payload["id"]] += 1
            elif kind == "broadcastResult":
                self.results[payload["id"]] = time.monotonic()
            elif kind == "echo":
                self.echoes.append(payload)
            else:
                self.others.append(message)
            self.arrived.set()

    async def send(self, kind: str, payload) -> None:
        await self.socket.send(json.dumps({"type": kind, "payload": payload}))

    async def close(self) -> None:
        self.reader.cancel()
        await self.socket.close()


def test_every_broadcast_reaches_every_socket_once_and_echo_comes_back(capsys):
    async def scenario():
        clients = [Client() for _ in range(CLIENTS)]
        await asyncio.gather(*(client.open() for client in clients))
        # Joined: an echo round trip on each socket proves its connect (and group add) ran.
        for client in clients:
            await client.send("echo", {"hello": 1})
        deadline = time.monotonic() + 30
        while any(not c.echoes for c in clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert all(c.echoes == [{"hello": 1}] for c in clients)

        pending = asyncio.Semaphore(CONCURRENT)
        rtts: list[float] = []

        async def broadcast(n: int) -> None:
            async with pending:
                sender = random.choice(clients)
                started = time.monotonic()
                await sender.send("broadcast", {"id": n, "sendTime": time.time(), "padding": "x" * 64})
                while n not in sender.results:
                    assert time.monotonic() - started < 30, f"no broadcastResult for {n}"
                    await asyncio.sleep(0.005)
                rtts.append(sender.results[n] - started)

        await asyncio.gather(*(broadcast(n) for n in range(BROADCASTS)))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(len(c.broadcasts) < BROADCASTS for c in clients):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a duplicate would come now
        missing = sum(1 for c in clients for n in range(BROADCASTS) if c.broadcasts[n] == 0)
        repeated = sum(count - 1 for c in clients for count in c.broadcasts.values() if count > 1)
        errors = [m for c in clients for m in c.others]
        await clients[0].socket.send("not json")
        deadline = time.monotonic() + 10
        while not clients[0].others and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        refusal = clients[0].others
        await asyncio.gather(*(c.close() for c in clients))
        rtts.sort()
        with capsys.disabled():
            print(
                f"\n  shootout: {CLIENTS} sockets, {BROADCASTS} broadcasts ({CONCURRENT} at a time):"
                f" {missing} receipts missing, {repeated} repeated; broadcastResult RTT p50"
                f" {rtts[len(rtts) // 2] * 1000:.0f} ms, max {rtts[-1] * 1000:.0f} ms"
            )
        assert (missing, repeated, errors) == (0, 0, [])
        assert [m["type"] for m in refusal] == ["error"]

    asyncio.run(scenario())
