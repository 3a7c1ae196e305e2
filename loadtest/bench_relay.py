"""Measurements of one stack for ``loadtest/bin/bench-relay`` (direct vs relay mode); prints JSON.

    python bench_relay.py http-rate --rate 300 --seconds 10        # p50/p99 at a fixed rate
    python bench_relay.py echo --connections 50 --seconds 8        # WebSocket echo msg/s, p99
    python bench_relay.py fanout --sockets 1000 --posts 20         # group fan-out latency

Runs in the loadtest image on the stack's compose network, aimed at nginx
(``BENCH_TARGET``, default ``nginx:8080``); every run is bounded in count and time.
Latencies at a fixed rate are measured from each request's scheduled send time, so a
stalled server shows up as latency rather than as fewer requests (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid

import websockets

TARGET = os.environ.get("BENCH_TARGET", "nginx:8080")
HOST_HEADER = os.environ.get("LOADTEST_HOST_HEADER", "localhost")
ORIGIN = os.environ.get("LOADTEST_ORIGIN", "http://localhost")
# Handshakes in flight while sockets open (fan-out), so a thousand sockets do not all
# knock at once.
OPENING_AT_ONCE = 100
# After the last post, how long the members may take to receive everything (fan-out).
DRAIN_SECONDS = 60.0


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(latencies_s: list[float]) -> dict:
    """p50/p95/p99/max in milliseconds."""
    ms = [value * 1000 for value in latencies_s]
    return {
        "p50_ms": round(statistics.median(ms), 2) if ms else None,
        "p95_ms": percentile(ms, 0.95),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms) if ms else None,
    }


# --- HTTP at a fixed rate -----------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection to nginx."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls) -> Connection:
        host, _, port = TARGET.partition(":")
        return cls(*await asyncio.open_connection(host, int(port or 80)))

    async def get(self, path: str) -> int:
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST_HEADER}\r\nUser-Agent: bench-relay\r\n\r\n"
        self.writer.write(request.encode())
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status


async def http_rate(path: str, rate: float, seconds: float, max_connections: int) -> dict:
    """Open-loop GETs: one every 1/rate s, each on an idle connection (a new one if none)."""
    idle: list[Connection] = []
    opened = 0
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures = 0
    tasks = set()

    async def one(scheduled: float) -> None:
        nonlocal opened, failures
        if idle:
            connection = idle.pop()
        elif opened < max_connections:
            opened += 1
            connection = await Connection.open()
        else:
            failures += 1  # every connection busy: counted, not queued (open loop)
            return
        try:
            status = await asyncio.wait_for(connection.get(path), 30)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError):
            failures += 1
            opened -= 1
            connection.writer.close()
            return
        latencies.append(time.monotonic() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1
        idle.append(connection)

    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    count = int(rate * seconds)
    for n in range(count):
        scheduled = start + n / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        # The loop's clock is time.monotonic(): latency counts from the scheduled send.
        task = asyncio.ensure_future(one(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    for connection in idle:
        connection.writer.close()
    elapsed = loop.time() - start
    return {
        "kind": "http-rate",
        "path": path,
        "rate": rate,
        "sent": count,
        "answered": len(latencies),
        "failures": failures,
        "statuses": statuses,
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "connections": opened,
        **summary(latencies),
    }


# --- WebSocket echo -------------------------------------------------------------------------


async def echo(connections: int, seconds: float) -> dict:
    """Each connection sends a frame and waits for it to come back, for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    url = f"ws://{TARGET}/ws/echo/"

    async def client(stop_at: float) -> None:
        nonlocal errors
        try:
            async with websockets.connect(url, origin=ORIGIN, open_timeout=60, max_queue=None) as socket:
                payload = "x" * 64
                while time.monotonic() < stop_at:
                    sent = time.monotonic()
                    await socket.send(payload)
                    await asyncio.wait_for(socket.recv(), 30)
                    latencies.append(time.monotonic() - sent)
        except (OSError, websockets.WebSocketException, TimeoutError):
            errors += 1

    started = time.monotonic()
    await asyncio.gather(*(client(started + seconds) for _ in range(connections)))
    elapsed = time.monotonic() - started
    return {
        "kind": "echo",
        "connections": connections,
        "messages": len(latencies),
        "errors": errors,
        "msg_per_s": round(len(latencies) / elapsed, 1),
        **summary(latencies),
    }


# --- group fan-out --------------------------------------------------------------------------


async def _members(room: str, count: int, ready, go, done, results, progress) -> None:
    """One process's share of a room's members: open, report ready, record every post's latency
    (counting receipts in the shared ``progress``)."""
    latencies: list[float] = []
    received = 0
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    url = f"ws://{TARGET}/ws/chat/{room}/"

    async def open_one():
        async with gate:
            socket = await websockets.connect(url, origin=ORIGIN, open_timeout=120, max_queue=None)
            await asyncio.wait_for(socket.recv(), 120)  # hello
            return socket

    sockets = await asyncio.gather(*(open_one() for _ in range(count)), return_exceptions=True)
    opened = [s for s in sockets if not isinstance(s, BaseException)]
    ready.put(len(opened))
    await asyncio.to_thread(go.wait)

    async def listen(socket) -> None:
        nonlocal received
        try:
            async for frame in socket:
                event = json.loads(frame)
                text = event.get("message", "")
                if text.startswith("bench "):
                    latencies.append(time.time() - float(text.split()[2]))
                    received += 1
                    with progress.get_lock():
                        progress.value += 1
        except websockets.ConnectionClosed:
            pass

    listeners = [asyncio.ensure_future(listen(s)) for s in opened]
    await asyncio.to_thread(done.wait)
    for socket in opened:
        await socket.close()
    await asyncio.gather(*listeners, return_exceptions=True)
    results.put({"opened": len(opened), "received": received, "latencies": latencies})


def _member_process(room, count, ready, go, done, results, progress) -> None:
    asyncio.run(_members(room, count, ready, go, done, results, progress))


async def fanout(sockets: int, posts: int, processes: int, pause: float) -> dict:
    """``sockets`` members of one room (over ``processes`` processes); one more posts ``posts``
    messages; latency = receipt - send time, for every member and post."""
    room = f"bench-fanout-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    go, done = context.Event(), context.Event()
    progress = context.Value("l", 0)
    shares = [sockets // processes + (1 if n < sockets % processes else 0) for n in range(processes)]
    workers = [
        context.Process(target=_member_process, args=(room, share, ready, go, done, results, progress))
        for share in shares
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    opened = 0
    for _ in workers:
        opened += await asyncio.to_thread(ready.get, True, 600)
    open_seconds = time.monotonic() - started
    go.set()
    url = f"ws://{TARGET}/ws/chat/{room}/"
    async with websockets.connect(url, origin=ORIGIN, open_timeout=60) as poster:
        await poster.recv()
        for n in range(posts):
            await poster.send(json.dumps({"message": f"bench {n} {time.time():.6f}"}))
            await asyncio.sleep(pause)
        # Until every member has every post, or DRAIN_SECONDS: a slow stack shows as latency.
        deadline = time.monotonic() + DRAIN_SECONDS
        while progress.value < opened * posts and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
    done.set()
    shares_results = [await asyncio.to_thread(results.get, True, 300) for _ in workers]
    for worker in workers:
        worker.join(60)
    latencies = [value for share in shares_results for value in share["latencies"]]
    expected = opened * posts
    return {
        "kind": "fanout",
        "sockets": sockets,
        "opened": opened,
        "open_seconds": round(open_seconds, 1),
        "posts": posts,
        "expected": expected,
        "received": len(latencies),
        **summary(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="kind", required=True)
    rate = sub.add_parser("http-rate")
    rate.add_argument("--path", default="/whoami")
    rate.add_argument("--rate", type=float, default=300)
    rate.add_argument("--seconds", type=float, default=10)
    rate.add_argument("--max-connections", type=int, default=300)
    ws = sub.add_parser("echo")
    ws.add_argument("--connections", type=int, default=50)
    ws.add_argument("--seconds", type=float, default=8)
    fan = sub.add_parser("fanout")
    fan.add_argument("--sockets", type=int, default=1000)
    fan.add_argument("--posts", type=int, default=20)
    fan.add_argument("--processes", type=int, default=2)
    fan.add_argument("--pause", type=float, default=1.0, help="seconds between posts")
    args = parser.parse_args(argv)
    if args.kind == "http-rate":
        if not (0 < args.rate <= 5000 and 0 < args.seconds <= 120):
            parser.error("--rate must be in (0, 5000] and --seconds in (0, 120]")
        result = asyncio.run(http_rate(args.path, args.rate, args.seconds, args.max_connections))
    elif args.kind == "echo":
        if not (0 < args.connections <= 2000 and 0 < args.seconds <= 120):
            parser.error("--connections must be in (0, 2000] and --seconds in (0, 120]")
        result = asyncio.run(echo(args.connections, args.seconds))
    else:
        if not (0 < args.sockets <= 20000 and 0 < args.posts <= 200 and 0 < args.processes <= 8):
            parser.error("--sockets (0, 20000], --posts (0, 200], --processes (0, 8]")
        result = asyncio.run(fanout(args.sockets, args.posts, args.processes, args.pause))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
