#!/usr/bin/env python3
"""Channel layer benchmark: the kit's RedisChannelLayer beside stock channels_redis.

For every (layer, shards, receivers) it starts sender and receiver processes,
each with its own event loop and layer instance, on one general channel with a
fresh prefix. Senders pace a target total rate; every message carries its id and
its send time, so receivers measure send-to-receive latency and the run counts
lost and duplicated messages. An optional second pass sends unpaced, for
throughput. Prints figures, not a verdict: the exit status is non-zero only when
the kit's layer lost a message.

Run it with ``scripts/bench-layer`` (``make bench-layer``); it needs four Redis
servers in ``TEST_REDIS_SHARD_URLS`` (comma-separated).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import platform
import queue
import resource
import sys
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import channels_redis.core
from channels.exceptions import ChannelFull

from channels_kit.layers.redis import RedisChannelLayer as KitRedisChannelLayer

LAYERS: dict[str, type] = {
    "kit": KitRedisChannelLayer,
    "stock": channels_redis.core.RedisChannelLayer,
}
CHANNEL = "bench.work"  # a general channel: no "!"
READY_TIMEOUT = 30.0  # seconds for the processes to connect and report ready
SEND_TIMEOUT = 10.0  # one send() call, at most
FULL_RETRY_DELAY = 0.005  # pause after ChannelFull before trying again
WATCH_INTERVAL = 0.05  # how often a receiver checks whether it may stop
CLOSE_TIMEOUT = 10.0  # closing a layer's connections
START_DELAY = 0.2  # between "everyone ready" and the first send
ACCEPTANCE_SHARDS, ACCEPTANCE_RECEIVERS, ACCEPTANCE_P99_MS = 4, 1, 50.0
OTHER_LOAD_WARNING = 0.25  # cores busy with other work during a case, above which a note says so


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """Settings shared by every configuration of one run."""

    urls: list[str]
    senders: int
    rate: float
    idle_timeout: float
    capacity: int
    expiry: int
    socket_timeout: float
    payload_bytes: int


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    impl: str
    shards: int
    receivers: int
    messages: int
    paced: bool

    @property
    def label(self) -> str:
        """E.g. ``kit 4 shard(s) 1 receiver(s) paced``."""
        kind = "paced" if self.paced else "saturation"
        return f"{self.impl} {self.shards} shard(s) {self.receivers} receiver(s) {kind}"


@dataclass
class Shared:
    """The cross-process state of one configuration."""

    go: Any
    start_at: Any
    senders_done: Any
    sent_total: Any
    seen: Any  # one byte per message id, set by whichever receiver got it
    reports: Any  # queue of ("ready" | "result", role, index, payload)


@dataclass
class Result:
    """The figures of one configuration."""

    config: Config
    sent: int = 0
    received: int = 0
    lost: int = 0
    dup: int = 0
    rate: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    send_p99_ms: float = math.nan
    sender_lag_ms: float = 0.0
    full_retries: int = 0
    sender_cpu: float = 0.0
    receiver_cpu: float = 0.0
    tail_bursts: int = 0
    tail_largest_burst: int = 0
    machine_cores: float = math.nan
    bench_cores: float = math.nan
    redis_cores: float = math.nan
    left_queued: int = 0
    left_inflight: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores; /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return math.nan
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


async def redis_cpu_seconds(options: Options) -> float:
    """CPU seconds used so far by every Redis server (``INFO cpu``)."""
    layer = make_layer("stock", options, len(options.urls), "bench-cpu-")
    total = 0.0
    try:
        for index in range(layer.ring_size):
            info = await layer.connection(index).info("cpu")
            total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    finally:
        await close_layer(layer)
    return total


def cpu_seconds() -> float:
    """CPU time (user + system) this process used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_layer(impl: str, options: Options, shards: int, prefix: str) -> Any:
    """A fresh layer instance of one implementation on the first ``shards`` servers."""
    hosts = [{"address": url, "socket_timeout": options.socket_timeout} for url in options.urls[:shards]]
    return LAYERS[impl](hosts=hosts, prefix=prefix, capacity=options.capacity, expiry=options.expiry)


async def close_layer(layer: Any) -> None:
    """Close a layer's connections of this event loop; give up after CLOSE_TIMEOUT."""
    closing = asyncio.ensure_future(layer.close_pools())
    await asyncio.wait([closing], timeout=CLOSE_TIMEOUT)
    if not closing.done():
        print(f"warning: closing a layer took over {CLOSE_TIMEOUT:g} s; left behind", file=sys.stderr)
    elif closing.exception() is not None:
        print(f"warning: closing a layer failed: {closing.exception()!r}", file=sys.stderr)


async def ping_all(layer: Any) -> None:
    """Open a connection to every shard, so set-up time stays out of the figures."""
    for index in range(layer.ring_size):
        await layer.connection(index).ping()


# --- processes -------------------------------------------------------------------------


def sender_main(config: Config, options: Options, prefix: str, index: int, shared: Shared) -> None:
    """A sender process: its share of the ids, paced (or not), then a report."""
    asyncio.run(_sender(config, options, prefix, index, shared))


async def _sender(config: Config, options: Options, prefix: str, index: int, shared: Shared) -> None:
    """Connect, report ready, wait for the start signal, send ids ``index, index + senders, ...``."""
    layer = make_layer(config.impl, options, config.shards, prefix)
    report: dict[str, Any] = {"sent": array("q"), "durations": array("d"), "full": 0, "lag": 0.0}
    report["errors"] = errors = Counter()
    try:
        await ping_all(layer)
        shared.reports.put(("ready", "sender", index, None))
        if not await asyncio.to_thread(shared.go.wait, READY_TIMEOUT * 2):
            errors["never started"] += 1
            return
        start = shared.start_at.value
        interval = options.senders / options.rate  # between two sends of this sender
        padding = "x" * options.payload_bytes
        await asyncio.sleep(max(0.0, start - time.time()))
        ids = range(index, config.messages, options.senders)
        for n, message_id in enumerate(ids):
            if config.paced:
                delay = start + (n + index / options.senders) * interval - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    report["lag"] = max(report["lag"], -delay)
            await _send_one(layer, message_id, padding, report)
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        errors[f"sender: {exc!r}"] += 1
    finally:
        await close_layer(layer)
        report["cpu"] = cpu_seconds()
        shared.reports.put(("result", "sender", index, report))


async def _send_one(layer: Any, message_id: int, padding: str, report: dict[str, Any]) -> None:
    """Send one message, retrying while the channel is full (up to SEND_TIMEOUT)."""
    first_try = time.time()
    while True:
        sent_at = time.time()
        message = {"type": "bench.message", "id": message_id, "sent": sent_at, "text": padding}
        try:
            await asyncio.wait_for(layer.send(CHANNEL, message), SEND_TIMEOUT)
        except ChannelFull:
            report["full"] += 1
            if time.time() - first_try > SEND_TIMEOUT:
                report["errors"]["gave up on a full channel"] += 1
                return
            await asyncio.sleep(FULL_RETRY_DELAY)
            continue
        except Exception as exc:  # noqa: BLE001 - counted; the id is not counted as sent
            report["errors"][f"send: {type(exc).__name__}"] += 1
            return
        report["sent"].append(message_id)
        report["durations"].append(time.time() - sent_at)
        report.setdefault("first", sent_at)
        report["last"] = sent_at
        return


def receiver_main(config: Config, options: Options, prefix: str, index: int, shared: Shared) -> None:
    """A receiver process: receive until every message is accounted for, or idle, then report.

    It leaves with ``os._exit`` once its report is flushed: a stock channels_redis
    receive may outlive its cancellation, and ``asyncio.run`` would wait for it.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_receiver(config, options, prefix, index, shared))
    finally:
        shared.reports.close()
        shared.reports.join_thread()
        os._exit(0)


async def _receiver(config: Config, options: Options, prefix: str, index: int, shared: Shared) -> None:
    """Connect, start receiving, report ready; stop when told by the watch below; report."""
    layer = make_layer(config.impl, options, config.shards, prefix)
    report: dict[str, Any] = {"ids": array("q"), "latencies": array("d"), "last": 0.0}
    report["errors"] = errors = Counter()
    stopping = False

    async def consume() -> None:
        """Receive and record, until stopped; errors are counted and the loop goes on."""
        while not stopping:
            try:
                message = await layer.receive(CHANNEL)
            except Exception as exc:  # noqa: BLE001 - counted, then receive again
                errors[f"receive: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)
                continue
            now = time.time()
            report["ids"].append(message["id"])
            report["latencies"].append(now - message["sent"])
            report.setdefault("first", now)
            report["last"] = now
            if 0 <= message["id"] < len(shared.seen):
                shared.seen[message["id"]] = 1

    consumer: asyncio.Future | None = None
    try:
        await ping_all(layer)
        consumer = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)  # let it settle into its first blocking read
        shared.reports.put(("ready", "receiver", index, None))
        await _until_accounted_for_or_idle(consumer, options, shared)
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        errors[f"receiver: {exc!r}"] += 1
    finally:
        # Stopping cancels a receive that waits on an empty (or stranded-on) shard.
        stopping = True
        if consumer is not None:
            consumer.cancel()
            await asyncio.wait([consumer], timeout=layer.brpop_timeout + 1)
            if not consumer.done():
                errors["a receive() outlived its cancellation"] += 1
        report["cpu"] = cpu_seconds()
        snapshot = {**report, "ids": array("q", report["ids"]), "latencies": array("d", report["latencies"])}
        shared.reports.put(("result", "receiver", index, snapshot))
        await close_layer(layer)


async def _until_accounted_for_or_idle(consumer: asyncio.Future, options: Options, shared: Shared) -> None:
    """Return when every sent message arrived somewhere, or none arrived for ``idle_timeout``.

    Both only count once the senders are done; a duplicate is no news.
    """
    done_seen: float | None = None
    arrived, last_news = 0, time.time()
    while not consumer.done():
        await asyncio.sleep(WATCH_INTERVAL)
        now_arrived = bytes(shared.seen).count(1)
        if now_arrived != arrived:
            arrived, last_news = now_arrived, time.time()
        if not shared.senders_done.is_set():
            continue
        if done_seen is None:
            done_seen = time.time()
        if arrived >= shared.sent_total.value:
            return
        if time.time() - max(done_seen, last_news) >= options.idle_timeout:
            return


# --- one configuration ---------------------------------------------------------------


def run_config(config: Config, options: Options, run_id: str) -> Result:
    """Run one configuration end to end: processes, figures, leftovers, flush."""
    started = time.monotonic()
    pass_name = "p" if config.paced else "s"
    prefix = f"bench-{run_id}-{pass_name}-{config.impl}-{config.shards}s{config.receivers}r-"
    ctx = mp.get_context("fork")
    shared = Shared(
        go=ctx.Event(),
        start_at=ctx.Value("d", 0.0),
        senders_done=ctx.Event(),
        sent_total=ctx.Value("q", 0),
        seen=ctx.RawArray("B", config.messages),
        reports=ctx.Queue(),
    )
    result = Result(config)
    receivers = [
        ctx.Process(target=receiver_main, args=(config, options, prefix, i, shared), daemon=True)
        for i in range(config.receivers)
    ]
    senders = [
        ctx.Process(target=sender_main, args=(config, options, prefix, i, shared), daemon=True)
        for i in range(options.senders)
    ]
    reports = Reports(shared.reports, result)
    before = (
        time.monotonic(),
        machine_busy_seconds(),
        asyncio.run(redis_cpu_seconds(options)),
        cpu_seconds(),
    )
    for process in receivers + senders:
        process.start()
    try:
        reports.wait_for(lambda: reports.accounted(len(senders), len(receivers)), READY_TIMEOUT, "ready")
        shared.start_at.value = time.time() + START_DELAY
        shared.go.set()
        send_deadline = START_DELAY + config.messages / min(options.rate, 500.0) + 60.0
        reports.wait_for(lambda: len(reports.senders) == len(senders), send_deadline, "sender")
        shared.sent_total.value = sum(len(r["sent"]) for r in reports.senders.values())
        shared.senders_done.set()
        receive_deadline = options.idle_timeout + 120.0
        reports.wait_for(lambda: len(reports.receivers) == len(receivers), receive_deadline, "receiver")
    finally:
        for process in receivers + senders:
            process.join(timeout=5)
            if process.is_alive():
                result.problems.append(f"{process.name} did not exit; terminated")
                process.terminate()
                process.join(timeout=5)
    after = (time.monotonic(), machine_busy_seconds(), asyncio.run(redis_cpu_seconds(options)), cpu_seconds())
    _figures(result, reports.senders, reports.receivers)
    wall, machine, redis, parent = (b - a for a, b in zip(before, after, strict=True))
    result.machine_cores = machine / wall
    result.redis_cores = redis / wall
    result.bench_cores = (result.sender_cpu + result.receiver_cpu + parent) / wall
    result.left_queued, result.left_inflight = asyncio.run(_leftovers_then_flush(config, options, prefix))
    result.seconds = time.monotonic() - started
    return result


class Reports:
    """What the processes of one configuration reported: who is ready, and their results."""

    def __init__(self, channel: Any, result: Result) -> None:
        self.channel = channel
        self.result = result
        self.ready: set[tuple[str, int]] = set()
        self.senders: dict[int, dict[str, Any]] = {}
        self.receivers: dict[int, dict[str, Any]] = {}

    def accounted(self, senders: int, receivers: int) -> bool:
        """Whether every process is ready (or already finished, having failed)."""
        finished = {("sender", i) for i in self.senders} | {("receiver", i) for i in self.receivers}
        return len(self.ready | finished) == senders + receivers

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Read reports until ``condition()`` holds, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            try:
                kind, role, index, payload = self.channel.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.result.problems.append(f"timed out after {timeout:.0f} s waiting for {what} reports")
                return
            if kind == "ready":
                self.ready.add((role, index))
            else:
                (self.senders if role == "sender" else self.receivers)[index] = payload


def _figures(
    result: Result, sender_reports: dict[int, dict[str, Any]], receiver_reports: dict[int, dict[str, Any]]
) -> None:
    """Counts, rates and latency percentiles from the processes' reports."""
    sent_ids = {i for report in sender_reports.values() for i in report["sent"]}
    counts = Counter(i for report in receiver_reports.values() for i in report["ids"])
    result.sent = len(sent_ids)
    result.received = len(counts.keys() & sent_ids)
    result.lost = len(sent_ids - counts.keys())
    result.dup = sum(n - 1 for n in counts.values() if n > 1)
    latencies = sorted(x for report in receiver_reports.values() for x in report["latencies"])
    if latencies:
        result.p50_ms = percentile(latencies, 50) * 1000
        result.p99_ms = percentile(latencies, 99) * 1000
        result.max_ms = latencies[-1] * 1000
        slow = sorted(
            i
            for report in receiver_reports.values()
            for i, latency in zip(report["ids"], report["latencies"], strict=True)
            if latency * 1000 >= result.p99_ms
        )
        result.tail_bursts, result.tail_largest_burst = bursts(slow)
    durations = sorted(x for report in sender_reports.values() for x in report["durations"])
    if durations:
        result.send_p99_ms = percentile(durations, 99) * 1000
    firsts = [r["first"] for r in sender_reports.values() if "first" in r]
    lasts = [r["last"] for r in receiver_reports.values() if "first" in r]
    if firsts and lasts and max(lasts) > min(firsts):
        result.rate = result.received / (max(lasts) - min(firsts))
    result.sender_lag_ms = max((r["lag"] for r in sender_reports.values()), default=0.0) * 1000
    result.full_retries = sum(r["full"] for r in sender_reports.values())
    result.sender_cpu = sum(r.get("cpu", 0.0) for r in sender_reports.values())
    result.receiver_cpu = sum(r.get("cpu", 0.0) for r in receiver_reports.values())
    errors: Counter = Counter()
    for report in [*sender_reports.values(), *receiver_reports.values()]:
        errors.update(report["errors"])
    result.problems.extend(f"{n} x {what}" for what, n in sorted(errors.items()))


async def _leftovers_then_flush(config: Config, options: Options, prefix: str) -> tuple[int, int]:
    """Messages still in Redis (queued, and in stock's ``$inflight`` backups); then flush the prefix."""
    layer = make_layer(config.impl, options, config.shards, prefix)
    queued = inflight = 0
    try:
        for index in range(layer.ring_size):
            connection = layer.connection(index)
            queued += await connection.zcard(prefix + CHANNEL)
            inflight += await connection.zcard(prefix + CHANNEL + "$inflight")
        await layer.flush()
    finally:
        await close_layer(layer)
    return queued, inflight


def bursts(ids: list[int], gap: int = 20) -> tuple[int, int]:
    """How many runs of nearby ids (ids follow send order) a sorted list holds, and the longest."""
    runs: list[int] = []
    previous = None
    for i in ids:
        if previous is not None and i - previous <= gap:
            runs[-1] += 1
        else:
            runs.append(1)
        previous = i
    return len(runs), max(runs, default=0)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# --- report --------------------------------------------------------------------------


async def redis_facts(urls: list[str]) -> list[str]:
    """``redis_version`` (and a few more) of every server, from INFO."""
    options = Options(
        urls, senders=1, rate=1, idle_timeout=1, capacity=1, expiry=60, socket_timeout=10, payload_bytes=0
    )
    layer = make_layer("stock", options, len(urls), "bench-facts-")
    facts = []
    try:
        for index, url in enumerate(urls):
            info = await layer.connection(index).info("server")
            facts.append(
                f"{url}: Redis {info.get('redis_version')} ({info.get('multiplexing_api')}, "
                f"{info.get('arch_bits')}-bit, io-threads {info.get('io_threads_active', 0)})"
            )
    finally:
        await close_layer(layer)
    return facts


def print_facts(options: Options) -> None:
    """The machine and software the figures come from."""

    def version(name: str) -> str:
        """An installed distribution's version."""
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print("== channel layer benchmark")
    print(f"machine: {cores} cores ({usable} usable), {platform.platform()}")
    print(
        f"python {platform.python_version()}; redis-py {version('redis')}; "
        f"channels_redis {version('channels-redis')}; channels {version('channels')}"
    )
    for line in asyncio.run(redis_facts(options.urls)):
        print(f"server {line}")
    print(f"load average before the run: {load_average()} (other work on the machine skews the figures)")
    print(
        f"workload: {options.senders} senders, paced at {options.rate:g} msg/s in total, "
        f"{options.payload_bytes}-byte payload, capacity {options.capacity}, "
        f"socket timeout {options.socket_timeout:g} s, idle timeout {options.idle_timeout:g} s"
    )
    print()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as text."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fmt(value: float, digits: int = 1) -> str:
    """A number for the table; '-' when there is none."""
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def print_table(paced: list[Result], saturated: dict[tuple[str, int, int], Result]) -> None:
    """The one table: paced figures, plus the saturation pass's throughput when it ran."""
    header = (
        f"{'impl':<6}{'shards':>7}{'recv':>5}{'sent':>7}{'received':>9}{'lost':>6}{'dup':>6}"
        f"{'msg/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>9}"
    )
    if saturated:
        header += f" |{'sat msg/s':>10}{'sat lost':>9}{'sat dup':>8}"
    print(header)
    print("-" * len(header))
    for r in paced:
        c = r.config
        line = (
            f"{c.impl:<6}{c.shards:>7}{c.receivers:>5}{r.sent:>7}{r.received:>9}{r.lost:>6}{r.dup:>6}"
            f"{r.rate:>8.0f}{fmt(r.p50_ms):>8}{fmt(r.p99_ms):>8}{fmt(r.max_ms):>9}"
        )
        s = saturated.get((c.impl, c.shards, c.receivers))
        if s is not None:
            line += f" |{s.rate:>10.0f}{s.lost:>9}{s.dup:>8}"
        print(line)
    print()


def ratio(kit: float, stock: float) -> str:
    """kit/stock as text."""
    if math.isnan(kit) or math.isnan(stock) or stock == 0:
        return "-"
    return f"{kit / stock:.2f}"


def print_ratios(paced: list[Result], saturated: dict[tuple[str, int, int], Result]) -> None:
    """kit/stock per (shards, receivers): throughput (higher is better) and p99 (lower is better)."""
    by_key = {(r.config.impl, r.config.shards, r.config.receivers): r for r in paced}
    pairs = sorted({(s, n) for (_, s, n) in by_key})
    print("kit/stock ratios (throughput: higher is better; p99: lower is better)")
    for shards, receivers in pairs:
        kit, stock = by_key.get(("kit", shards, receivers)), by_key.get(("stock", shards, receivers))
        if kit is None or stock is None:
            continue
        line = (
            f"  {shards} shard(s), {receivers} receiver(s): "
            f"paced msg/s x{ratio(kit.rate, stock.rate)}, p99 x{ratio(kit.p99_ms, stock.p99_ms)}"
        )
        kit_sat, stock_sat = (
            saturated.get(("kit", shards, receivers)),
            saturated.get(("stock", shards, receivers)),
        )
        if kit_sat is not None and stock_sat is not None:
            line += f", saturated msg/s x{ratio(kit_sat.rate, stock_sat.rate)}"
        print(line)
    print()


def per_message_us(cpu: float, messages: int) -> str:
    """CPU microseconds per message, as text."""
    return f"{cpu / messages * 1e6:.0f}" if messages else "-"


def other_cores(r: Result) -> float:
    """Cores busy with anything but this case's processes and the Redis servers (NaN: unknown)."""
    other = r.machine_cores - r.bench_cores - r.redis_cores
    return other if math.isnan(other) else max(0.0, other)


def print_notes(results: Iterable[Result]) -> None:
    """Per-configuration details behind the table: send times, pacing, CPU, leftovers, errors."""
    print(
        "details: send p99 = one send() call; lag = worst delay behind the pacing schedule; "
        "cpu/msg = process CPU per message, senders | receivers; slowest 1% = runs of nearby "
        "messages (few long runs: the machine stalled, not the layer); cores = average busy cores "
        "of the machine, split into these processes, the Redis servers and everything else"
    )
    for r in results:
        parts = [
            f"{r.seconds:.1f} s",
            f"send p99 {fmt(r.send_p99_ms, 2)} ms",
            f"lag {r.sender_lag_ms:.0f} ms",
            f"cpu/msg {per_message_us(r.sender_cpu, r.sent)} | "
            f"{per_message_us(r.receiver_cpu, r.received)} us",
        ]
        if r.config.paced and r.tail_bursts:
            parts.append(f"slowest 1% in {r.tail_bursts} run(s), longest {r.tail_largest_burst}")
        parts.append(
            f"cores {fmt(r.machine_cores, 2)} = {fmt(r.bench_cores, 2)} + redis {fmt(r.redis_cores, 2)} "
            f"+ other {fmt(other_cores(r), 2)}"
        )
        if r.left_queued or r.left_inflight:
            parts.append(f"left in Redis: {r.left_queued} queued, {r.left_inflight} in $inflight")
        if r.full_retries:
            parts.append(f"{r.full_retries} ChannelFull retries")
        parts.extend(r.problems)
        print(f"  {r.config.label}: " + "; ".join(parts))
    print()


# --- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Benchmark the kit's channel layer against stock channels_redis (prints figures).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="paced send rate, msg/s over all senders")
    parser.add_argument(
        "--messages", type=int, default=10_000, help="messages of the acceptance case (4 shards, 1 receiver)"
    )
    parser.add_argument("--messages-small", type=int, default=4_000, help="messages of every other case")
    parser.add_argument("--senders", type=int, default=4, help="sender processes")
    parser.add_argument("--shards", default="1,2,4", help="shard counts, comma-separated (at most 4)")
    parser.add_argument("--receivers", default="1,4", help="receiver process counts, comma-separated")
    parser.add_argument("--impls", default="kit,stock", help="layers to compare: kit, stock")
    parser.add_argument(
        "--saturation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run an unpaced pass for throughput",
    )
    parser.add_argument("--saturation-messages", type=int, default=4_000, help="messages per saturation case")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=3.0,
        help="receivers give up this long after the last message once the senders are done",
    )
    parser.add_argument(
        "--capacity",
        type=int,
        default=100_000,
        help="channel capacity (high, so neither layer throttles the senders)",
    )
    parser.add_argument("--expiry", type=int, default=60, help="message expiry, seconds")
    parser.add_argument(
        "--socket-timeout",
        type=float,
        default=30.0,
        help="Redis client socket timeout (the kit's REDIS_SOCKET_TIMEOUT default)",
    )
    parser.add_argument("--payload-bytes", type=int, default=100, help="text carried by each message")
    return parser.parse_args(argv)


def int_list(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``."""
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run every case, print the report; 1 when the kit's layer lost a message."""
    args = parse_args(argv)
    started = time.monotonic()
    urls = [u.strip() for u in os.environ.get("TEST_REDIS_SHARD_URLS", "").split(",") if u.strip()]
    shard_counts, receiver_counts = int_list(args.shards), int_list(args.receivers)
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    if not urls or len(urls) < max(shard_counts):
        print(
            f"TEST_REDIS_SHARD_URLS must list {max(shard_counts)} Redis URLs (got {len(urls)})",
            file=sys.stderr,
        )
        return 2
    if unknown := set(impls) - LAYERS.keys():
        print(
            f"unknown --impls: {', '.join(sorted(unknown))} (choose from {', '.join(LAYERS)})",
            file=sys.stderr,
        )
        return 2
    options = Options(
        urls=urls,
        senders=args.senders,
        rate=args.rate,
        idle_timeout=args.idle_timeout,
        capacity=args.capacity,
        expiry=args.expiry,
        socket_timeout=args.socket_timeout,
        payload_bytes=args.payload_bytes,
    )
    print_facts(options)
    run_id = uuid.uuid4().hex[:8]

    def messages(shards: int, receivers: int) -> int:
        """How many messages a paced case sends."""
        acceptance = (shards, receivers) == (ACCEPTANCE_SHARDS, ACCEPTANCE_RECEIVERS)
        return args.messages if acceptance else args.messages_small

    plan = [
        Config(impl, shards, receivers, messages(shards, receivers), paced=True)
        for shards in shard_counts
        for receivers in receiver_counts
        for impl in impls
    ]
    if args.saturation:
        plan += [
            Config(impl, shards, receivers, args.saturation_messages, paced=False)
            for shards in shard_counts
            for receivers in receiver_counts
            for impl in impls
        ]
    results = []
    for config in plan:
        print(f"running {config.label}, {config.messages} messages ...", flush=True)
        results.append(run_config(config, options, run_id))
    paced = [r for r in results if r.config.paced]
    saturated = {
        (r.config.impl, r.config.shards, r.config.receivers): r for r in results if not r.config.paced
    }

    print_table(paced, saturated)
    print_ratios(paced, saturated)
    print_notes(results)
    acceptance = next(
        (
            r
            for r in paced
            if r.config.impl == "kit"
            and (r.config.shards, r.config.receivers) == (ACCEPTANCE_SHARDS, ACCEPTANCE_RECEIVERS)
        ),
        None,
    )
    if acceptance is not None:
        verdict = "met" if acceptance.lost == 0 and acceptance.p99_ms <= ACCEPTANCE_P99_MS else "NOT met"
        print(
            f"acceptance (kit): {ACCEPTANCE_SHARDS} shards, {ACCEPTANCE_RECEIVERS} receiver, "
            f"{acceptance.config.messages:,} messages from {options.senders} senders: "
            f"lost={acceptance.lost} p99={fmt(acceptance.p99_ms)} ms "
            f"(goal <= {ACCEPTANCE_P99_MS:g} ms): {verdict}"
        )
    else:
        print("acceptance case (kit, 4 shards, 1 receiver) was not run")
    busiest = max((other_cores(r) for r in paced if not math.isnan(other_cores(r))), default=0.0)
    if busiest > OTHER_LOAD_WARNING:
        print(
            f"note: other work kept up to {busiest:.2f} cores busy during a paced case; on a shared "
            "machine latency tails measure the machine, not the layer: rerun when it is idle"
        )
    print(f"total run time: {time.monotonic() - started:.0f} s; load average now {load_average()}")
    kit_lost = sum(r.lost for r in results if r.config.impl == "kit")
    if kit_lost:
        print(f"FAIL: the kit's layer lost {kit_lost} message(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
