#!/usr/bin/env python3
"""The channel backends side by side: the kit's Redis layer on 1 and 4 shards, RabbitMQ,
PostgreSQL and the same-host (SQLite) layer, on the same workloads in one run.

Workloads, each with processes of their own (every process its own event loop and layer
instance, as Daphne and the workers are):

- ``direct``: 4 senders to one receiver's ``!`` channel (the path of replies and of a
  socket's group messages);
- ``general-1`` / ``general-4``: 4 senders to a general channel that 1 or 4 receiving
  processes serve (background workers, relay mode's ``http.request``);
- ``fan-out``: one sender's ``group_send`` to a group of 100 ``!`` channels held by 4
  receiving processes (a chat room).

A paced pass (a fixed rate: latency) and an unpaced pass (throughput). Every message
carries its id and send time; receivers record send-to-receive latency, and every
delivery is counted, so lost and duplicated messages are reported. Ratios are to the
Redis layer on one server. Prints figures, not a verdict: the exit status is 1 only
when a backend lost or duplicated a message.

Run it with ``scripts/bench-layer`` (``make bench-layer``): it needs
``TEST_REDIS_SHARD_URLS`` (four servers), ``TEST_RABBITMQ_URL`` and ``TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import platform
import queue
import sys
import tempfile
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from bench_layer import load_average, percentile
from channels.exceptions import ChannelFull

from channels_kit.layers.local import LocalChannelLayer
from channels_kit.layers.postgres import PostgresChannelLayer
from channels_kit.layers.rabbitmq import RabbitMQChannelLayer
from channels_kit.layers.redis import RedisChannelLayer

BACKENDS = ("redis-1", "redis-4", "rabbitmq", "postgres", "local")
WORKLOADS = ("direct", "general-1", "general-4", "fan-out")
BASELINE = "redis-1"
SENDERS = 4  # sender processes of every workload but fan-out (one group sender)
FANOUT_RECEIVERS, FANOUT_MEMBERS = 4, 100
CHANNEL, GROUP = "bench.work", "bench-room"
CAPACITY = 100_000  # no backend throttles the senders
READY_TIMEOUT = 60.0
SEND_TIMEOUT = 10.0
WATCH_INTERVAL = 0.05
START_DELAY = 0.3


@dataclass(frozen=True)
class Case:
    backend: str
    workload: str
    messages: int  # sends (group sends for fan-out)
    rate: float  # sends per second over all senders; 0: unpaced

    @property
    def senders(self) -> int:
        return 1 if self.workload == "fan-out" else SENDERS

    @property
    def receivers(self) -> int:
        return {"direct": 1, "general-1": 1, "general-4": 4, "fan-out": FANOUT_RECEIVERS}[self.workload]

    @property
    def fan(self) -> int:
        """Deliveries per send."""
        return FANOUT_MEMBERS if self.workload == "fan-out" else 1

    @property
    def paced(self) -> bool:
        return self.rate > 0


@dataclass
class Result:
    case: Case
    delivered: int = 0
    expected: int = 0
    lost: int = 0
    dup: int = 0
    rate: float = math.nan  # deliveries per second
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def make_layer(backend: str, prefix: str, local_path: str) -> Any:
    """A fresh layer of ``backend``, as one process of the deployment would build it."""
    common = {"prefix": prefix, "capacity": CAPACITY, "expiry": 60}
    if backend.startswith("redis-"):
        urls = [u for u in os.environ["TEST_REDIS_SHARD_URLS"].split(",") if u]
        shards = int(backend.removeprefix("redis-"))
        return RedisChannelLayer(
            hosts=[{"address": u, "socket_timeout": 30} for u in urls[:shards]], **common
        )
    if backend == "rabbitmq":
        return RabbitMQChannelLayer(url=os.environ["TEST_RABBITMQ_URL"], **common)
    if backend == "postgres":
        return PostgresChannelLayer(url=os.environ["TEST_POSTGRES_URL"], **common)
    if backend == "local":
        return LocalChannelLayer(path=local_path, **common)
    raise ValueError(backend)


async def close_layer(layer: Any) -> None:
    """Close a layer's connections of this process, whatever the backend calls it."""
    closing = layer.close_pools() if hasattr(layer, "close_pools") else layer.close()
    try:
        await asyncio.wait_for(closing, 10)
    except Exception as exc:  # noqa: BLE001 - a figure run goes on
        print(f"warning: closing a layer: {exc!r}", file=sys.stderr)


@dataclass
class Shared:
    """The cross-process state of one case."""

    go: Any
    start_at: Any
    senders_done: Any
    sent_total: Any
    target: Any  # the direct workload's '!' channel, written by the parent
    seen: Any  # one byte per delivery key (message id x fan + member)
    reports: Any


# --- processes -------------------------------------------------------------------------


def sender_main(case: Case, prefix: str, local_path: str, index: int, shared: Shared) -> None:
    asyncio.run(_sender(case, prefix, local_path, index, shared))


async def _sender(case: Case, prefix: str, local_path: str, index: int, shared: Shared) -> None:
    layer = make_layer(case.backend, prefix, local_path)
    sent, errors, first = array("q"), Counter(), math.inf
    try:
        await layer.group_discard(GROUP, "bench.nobody")  # connected before the clock starts
        shared.reports.put(("ready", "sender", index, None))
        if not await asyncio.to_thread(shared.go.wait, READY_TIMEOUT * 2):
            errors["never started"] += 1
            return
        target = shared.target.value.decode() or CHANNEL
        start = shared.start_at.value
        await asyncio.sleep(max(0.0, start - time.time()))
        for n, message_id in enumerate(range(index, case.messages, case.senders)):
            if case.paced:
                delay = start + (n * case.senders + index) / case.rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            message = {"type": "bench.message", "id": message_id, "sent": time.time(), "text": "x" * 100}
            first = min(first, message["sent"])
            try:
                if case.fan > 1:
                    await asyncio.wait_for(layer.group_send(GROUP, message), SEND_TIMEOUT)
                else:
                    await _send(layer, target, message)
            except Exception as exc:  # noqa: BLE001 - counted; the id is not counted as sent
                errors[f"send: {type(exc).__name__}"] += 1
                continue
            sent.append(message_id)
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        errors[f"sender: {exc!r}"] += 1
    finally:
        await close_layer(layer)
        shared.reports.put(("result", "sender", index, {"sent": sent, "first": first, "errors": errors}))


async def _send(layer: Any, channel: str, message: dict) -> None:
    """One send, retried while the channel is full (up to SEND_TIMEOUT)."""
    deadline = time.monotonic() + SEND_TIMEOUT
    while True:
        try:
            await asyncio.wait_for(layer.send(channel, message), SEND_TIMEOUT)
            return
        except ChannelFull:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)


def receiver_main(case: Case, prefix: str, local_path: str, index: int, shared: Shared) -> None:
    """A receiving process; it leaves with ``os._exit`` once its report is flushed."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_receiver(case, prefix, local_path, index, shared))
    finally:
        shared.reports.close()
        shared.reports.join_thread()
        os._exit(0)


async def _receiver(case: Case, prefix: str, local_path: str, index: int, shared: Shared) -> None:
    layer = make_layer(case.backend, prefix, local_path)
    keys, latencies, errors = array("q"), array("d"), Counter()
    last = [0.0]
    members = FANOUT_MEMBERS // FANOUT_RECEIVERS
    stopping = False

    async def consume(channel: str, member: int) -> None:
        while not stopping:
            try:
                message = await layer.receive(channel)
            except Exception as exc:  # noqa: BLE001 - counted, then receive again
                errors[f"receive: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)
                continue
            last[0] = time.time()
            latencies.append(last[0] - message["sent"])
            key = message["id"] * case.fan + member
            keys.append(key)
            if 0 <= key < len(shared.seen):
                shared.seen[key] = 1

    consumers: list[asyncio.Task] = []
    try:
        if case.workload == "direct":
            channels = [(await layer.new_channel(), 0)]
        elif case.workload == "fan-out":
            channels = [(await layer.new_channel(), index * members + m) for m in range(members)]
            for channel, _ in channels:
                await layer.group_add(GROUP, channel)
        else:
            channels = [(CHANNEL, 0)]
        consumers = [asyncio.ensure_future(consume(channel, member)) for channel, member in channels]
        await asyncio.sleep(0.2)  # every receive waiting (and listening) before the first send
        shared.reports.put(("ready", "receiver", index, [channel for channel, _ in channels]))
        await _until_accounted_for_or_idle(case, shared)
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        errors[f"receiver: {exc!r}"] += 1
    finally:
        stopping = True
        for consumer in consumers:
            consumer.cancel()
        await asyncio.wait(consumers, timeout=5) if consumers else None
        report = {"keys": keys, "latencies": latencies, "last": last[0], "errors": errors}
        shared.reports.put(("result", "receiver", index, report))
        await close_layer(layer)


async def _until_accounted_for_or_idle(case: Case, shared: Shared, idle: float = 3.0) -> None:
    """Return when every delivery arrived somewhere, or none arrived for ``idle`` seconds
    after the senders were done."""
    arrived, last_news, done_seen = 0, time.time(), None
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        now_arrived = bytes(shared.seen).count(1)
        if now_arrived != arrived:
            arrived, last_news = now_arrived, time.time()
        if not shared.senders_done.is_set():
            continue
        done_seen = done_seen or time.time()
        if arrived >= shared.sent_total.value * case.fan:
            return
        if time.time() - max(done_seen, last_news) >= idle:
            return


# --- one case ----------------------------------------------------------------------------


def run_case(case: Case, run_id: str) -> Result:
    """Run one case end to end and compute its figures."""
    started = time.monotonic()
    prefix = f"bench{run_id}{case.backend.replace('-', '')}{case.workload.replace('-', '')}{int(case.paced)}"
    local_path = os.path.join(tempfile.gettempdir(), f"bench-backends-{run_id}.sqlite3")
    ctx = mp.get_context("fork")
    shared = Shared(
        go=ctx.Event(),
        start_at=ctx.Value("d", 0.0),
        senders_done=ctx.Event(),
        sent_total=ctx.Value("q", 0),
        target=ctx.Array("c", 512),
        seen=ctx.RawArray("B", case.messages * case.fan),
        reports=ctx.Queue(),
    )
    result = Result(case)
    receivers = [
        ctx.Process(target=receiver_main, args=(case, prefix, local_path, i, shared), daemon=True)
        for i in range(case.receivers)
    ]
    for process in receivers:
        process.start()
    ready: dict[tuple[str, int], Any] = {}
    finished: dict[tuple[str, int], dict] = {}

    def read_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            try:
                kind, role, index, payload = shared.reports.get(
                    timeout=max(0.01, deadline - time.monotonic())
                )
            except queue.Empty:
                result.problems.append(f"timed out after {timeout:.0f} s waiting for {what}")
                return
            (ready if kind == "ready" else finished)[(role, index)] = payload

    # Receivers first: their channels exist (and groups are joined) before a sender starts.
    read_until(lambda: len(ready) + len(finished) >= case.receivers, READY_TIMEOUT, "receivers")
    if case.workload == "direct" and ("receiver", 0) in ready:
        shared.target.value = ready[("receiver", 0)][0].encode()
    senders = [
        ctx.Process(target=sender_main, args=(case, prefix, local_path, i, shared), daemon=True)
        for i in range(case.senders)
    ]
    for process in senders:
        process.start()
    everyone = case.receivers + case.senders
    read_until(lambda: len(ready) + len(finished) >= everyone, READY_TIMEOUT, "senders")
    shared.start_at.value = time.time() + START_DELAY
    shared.go.set()
    sending = case.messages / case.rate if case.paced else case.messages / 50
    read_until(
        lambda: sum(r == "sender" for r, _ in finished) == case.senders, sending + 120, "senders' results"
    )
    sent = sorted({i for (role, _), report in finished.items() if role == "sender" for i in report["sent"]})
    shared.sent_total.value = len(sent)
    shared.senders_done.set()
    read_until(lambda: len(finished) == everyone, 180, "receivers' results")
    for process in receivers + senders:
        process.join(timeout=5)
        if process.is_alive():
            result.problems.append(f"{process.name} did not exit; terminated")
            process.terminate()
    _figures(result, sent, finished)
    asyncio.run(_flush(case, prefix, local_path))
    result.seconds = time.monotonic() - started
    return result


async def _flush(case: Case, prefix: str, local_path: str) -> None:
    layer = make_layer(case.backend, prefix, local_path)
    try:
        await layer.flush()
    finally:
        await close_layer(layer)


def _figures(result: Result, sent: list[int], reports: dict[tuple[str, int], dict]) -> None:
    """Counts, throughput and latency percentiles from the processes' reports."""
    fan = result.case.fan
    receivers = [report for (role, _), report in reports.items() if role == "receiver"]
    expected = {i * fan + m for i in sent for m in range(fan)}
    counts = Counter(key for report in receivers for key in report["keys"])
    result.expected = len(expected)
    result.delivered = len(counts.keys() & expected)
    result.lost = len(expected - counts.keys())
    result.dup = sum(n - 1 for n in counts.values() if n > 1)
    latencies = sorted(x for report in receivers for x in report["latencies"])
    if latencies:
        result.p50_ms = percentile(latencies, 50) * 1000
        result.p99_ms = percentile(latencies, 99) * 1000
    first = min((r["first"] for (role, _), r in reports.items() if role == "sender"), default=math.inf)
    last = max((r["last"] for r in receivers), default=0.0)
    if result.delivered and last > first:
        result.rate = result.delivered / (last - first)
    errors: Counter = Counter()
    for report in reports.values():
        errors.update(report["errors"])
    result.problems.extend(f"{n} x {what}" for what, n in sorted(errors.items()))


# --- report --------------------------------------------------------------------------


def fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def ratio(value: float, baseline: float) -> str:
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return "-"
    return f"{value / baseline:.2f}"


def print_facts(args: argparse.Namespace) -> None:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    print("== channel backends side by side")
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}; load average {load_average()}")
    print(
        f"python {platform.python_version()}; channels {version('channels')}; redis-py {version('redis')}; "
        f"aiormq {version('aiormq')}; psycopg {version('psycopg')}; sqlite {sqlite_version()}"
    )
    print(
        f"workloads: {SENDERS} senders (fan-out: 1 group sender, {FANOUT_MEMBERS} members in "
        f"{FANOUT_RECEIVERS} processes); paced at {args.rate:g} sends/s ({args.fanout_rate:g} group "
        f"sends/s), {args.messages} sends ({args.fanout_messages} group sends) per case; 100-byte payload"
    )
    print()


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def print_table(results: list[Result]) -> None:
    header = (
        f"{'backend':<10}{'workload':<11}{'pass':<7}{'deliveries':>11}{'lost':>6}{'dup':>5}"
        f"{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        c = r.case
        print(
            f"{c.backend:<10}{c.workload:<11}{'paced' if c.paced else 'max':<7}{r.delivered:>11,}{r.lost:>6}"
            f"{r.dup:>5}{fmt(r.rate, 0):>9}{fmt(r.p50_ms):>9}{fmt(r.p99_ms):>9}"
        )
    print()


def print_ratios(results: list[Result]) -> None:
    """Per backend and workload: unpaced msg/s and paced p99, each as a ratio to Redis on one server."""
    by_key = {(r.case.backend, r.case.workload, r.case.paced): r for r in results}
    print(f"ratios to {BASELINE} (msg/s unpaced: higher is better; p99 paced: lower is better)")
    for backend in dict.fromkeys(r.case.backend for r in results):
        if backend == BASELINE:
            continue
        parts = []
        for workload in dict.fromkeys(r.case.workload for r in results):
            here, base = by_key.get((backend, workload, False)), by_key.get((BASELINE, workload, False))
            fast = ratio(here.rate, base.rate) if here and base else "-"
            here, base = by_key.get((backend, workload, True)), by_key.get((BASELINE, workload, True))
            tail = ratio(here.p99_ms, base.p99_ms) if here and base else "-"
            parts.append(f"{workload} x{fast} / x{tail}")
        print(f"  {backend}: " + "; ".join(parts))
    print()


def print_problems(results: list[Result]) -> None:
    troubled = [r for r in results if r.problems]
    for r in troubled:
        c = r.case
        print(f"  {c.backend} {c.workload} {'paced' if c.paced else 'max'}: " + "; ".join(r.problems))
    if troubled:
        print()


# --- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare the channel backends side by side (prints figures).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="backends, comma-separated")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="workloads, comma-separated")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced sends per second, all senders")
    parser.add_argument("--messages", type=int, default=3000, help="sends per case")
    parser.add_argument("--fanout-rate", type=float, default=20.0, help="paced group sends per second")
    parser.add_argument("--fanout-messages", type=int, default=100, help="group sends per fan-out case")
    parser.add_argument(
        "--saturation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run an unpaced pass for throughput",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = (set(backends) - set(BACKENDS)) | (set(workloads) - set(WORKLOADS))
    if unknown:
        print(
            f"unknown: {', '.join(sorted(unknown))} (backends {BACKENDS}, workloads {WORKLOADS})",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    print_facts(args)
    run_id = uuid.uuid4().hex[:6]
    passes = [True, False] if args.saturation else [True]
    plan = []
    for paced in passes:
        for workload in workloads:
            fanout = workload == "fan-out"
            messages = args.fanout_messages if fanout else args.messages
            rate = (args.fanout_rate if fanout else args.rate) if paced else 0.0
            plan += [Case(backend, workload, messages, rate) for backend in backends]
    results = []
    for case in plan:
        print(
            f"running {case.backend} {case.workload} {'paced' if case.paced else 'unpaced'} ...", flush=True
        )
        results.append(run_case(case, run_id))
    print()
    print_table(results)
    print_ratios(results)
    print_problems(results)
    print(f"total run time: {time.monotonic() - started:.0f} s; load average now {load_average()}")
    broken = [r for r in results if r.lost or r.dup]
    for r in broken:
        print(f"FAIL: {r.case.backend} {r.case.workload}: {r.lost} lost, {r.dup} duplicated")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
