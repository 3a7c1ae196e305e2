"""The harness of the channel layer benchmarks (bench_layer.py, bench_backends.py): one case at a time.

A case names a layer (a factory: prefix -> a fresh instance), a workload and its sizes. Each
case starts its receiver processes, then its sender processes, every one with its own event
loop and layer instance (as Daphne and the workers are), on a fresh prefix:

- ``general``: a general channel (no ``!``) that every receiver serves;
- ``direct``: the first receiver's ``!`` channel (replies, a socket's group messages);
- ``fan-out``: ``group_send`` to a group of ``members`` ``!`` channels spread over the receivers.

Senders pace ``rate`` sends per second in total (0: unpaced). Every message carries its id
and its send time, so receivers measure send-to-receive latency, and every delivery is
counted, so lost and duplicated messages are reported. Also measured: the time of one send
call, the senders' lag behind their schedule, the processes' CPU, the machine's busy cores
and, when the case says how, the servers' CPU; for Redis, what stayed queued.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import queue
import re
import resource
import sys
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from typing import Any

from channels.exceptions import ChannelFull

CHANNEL, GROUP = "bench.work", "bench-room"  # a general channel: no "!"
READY_TIMEOUT = 60.0  # seconds for the processes to connect and report ready
SEND_TIMEOUT = 10.0  # one send() call, at most
FULL_RETRY_DELAY = 0.005  # pause after ChannelFull before trying again
WATCH_INTERVAL = 0.05  # how often a receiver checks whether it may stop
CLOSE_TIMEOUT = 10.0  # closing a layer's connections
START_DELAY = 0.3  # between "everyone ready" and the first send
SETTLE = 0.2  # a receiver's pause before "ready": every receive waiting (and listening)
CANCEL_TIMEOUT = 5.0  # for a cancelled receive, on a layer without a blocking-read timeout


@dataclass(frozen=True)
class Case:
    """One measured case."""

    key: tuple[Any, ...]  # the case in its benchmark's tables, e.g. ("kit", 4, 1)
    label: str  # the case in notes and problems
    layer: Callable[[str], Any]  # prefix -> a fresh layer instance (called in each process)
    workload: str = "general"  # general, direct or fan-out
    senders: int = 4
    receivers: int = 1
    messages: int = 1000  # sends (group sends for fan-out)
    rate: float = 0.0  # sends per second over all senders; 0: unpaced
    members: int = 1  # fan-out: the group's channels, over all receivers
    payload_bytes: int = 100
    idle_timeout: float = 3.0  # receivers give up this long after the last news, senders done
    server_cpu: Callable[[], float] | None = None  # CPU seconds the servers used so far

    @property
    def paced(self) -> bool:
        return self.rate > 0

    @property
    def fan(self) -> int:
        """Deliveries per send."""
        return self.members if self.workload == "fan-out" else 1


@dataclass
class Result:
    """The figures of one case (latencies and lag in ms, CPU in seconds, cores on average)."""

    case: Case
    sent: int = 0  # messages sent (group sends for fan-out)
    expected: int = 0  # deliveries those sends owe
    received: int = 0  # deliveries that arrived (each once)
    lost: int = 0
    dup: int = 0
    rate: float = math.nan  # deliveries per second, first send to last receipt
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    send_p99_ms: float = math.nan
    sender_lag_ms: float = 0.0
    full_retries: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # "sender" and "receiver" processes
    tail_bursts: tuple[int, int] = (0, 0)  # the slowest 1%: runs of nearby ids, the longest
    cores: dict[str, float] = field(default_factory=dict)  # "machine", "bench", "servers"
    leftovers: tuple[int, int] = (0, 0)  # Redis: queued, in stock's $inflight backups
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def other_cores(self) -> float:
        """Cores busy with anything but this case's processes and the servers (NaN: unknown)."""
        other = self.cores["machine"] - self.cores["bench"] - self.cores["servers"]
        return other if math.isnan(other) else max(0.0, other)


@dataclass
class Shared:
    """The cross-process state of one case."""

    go: Any
    start_at: Any
    senders_done: Any
    sent_total: Any
    target: Any  # the direct workload's "!" channel, written by the parent
    seen: Any  # one byte per delivery (message id x fan + member), set by whoever got it
    reports: Any  # queue of ("ready" | "result", role, index, payload)


# --- small pieces ----------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores; /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return math.nan
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """CPU time (user + system) this process used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def redis_hosts(urls: Iterable[str], socket_timeout: float) -> list[dict[str, Any]]:
    """The ``hosts`` of a Redis layer on ``urls``."""
    return [{"address": url, "socket_timeout": socket_timeout} for url in urls]


async def warm_up(layer: Any) -> None:
    """Open the layer's connections (every Redis shard), so set-up time stays out of the figures."""
    await layer.group_discard(GROUP, "bench.nobody")
    for index in range(getattr(layer, "ring_size", 0)):
        await layer.connection(index).ping()


async def close_layer(layer: Any) -> None:
    """Close a layer's connections of this event loop; give up after CLOSE_TIMEOUT."""
    closing = asyncio.ensure_future(layer.close_pools() if hasattr(layer, "close_pools") else layer.close())
    await asyncio.wait([closing], timeout=CLOSE_TIMEOUT)
    if not closing.done():
        print(f"warning: closing a layer took over {CLOSE_TIMEOUT:g} s; left behind", file=sys.stderr)
    elif closing.exception() is not None:
        print(f"warning: closing a layer failed: {closing.exception()!r}", file=sys.stderr)


async def using(layer: Any, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """``work(layer)``, then close the layer."""
    try:
        return await work(layer)
    finally:
        await close_layer(layer)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


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


# --- senders ---------------------------------------------------------------------------


def sender_main(case: Case, prefix: str, index: int, shared: Shared) -> None:
    """A sender process: its share of the ids, paced (or not), then a report."""
    asyncio.run(_sender(case, prefix, index, shared))


async def _sender(case: Case, prefix: str, index: int, shared: Shared) -> None:
    """Connect, report ready, wait for the start signal, send ids ``index, index + senders, ...``."""
    layer = case.layer(prefix)
    report: dict[str, Any] = {"sent": array("q"), "durations": array("d"), "full": 0, "lag": 0.0}
    report["errors"] = errors = Counter()
    try:
        await warm_up(layer)
        shared.reports.put(("ready", "sender", index, None))
        if not await asyncio.to_thread(shared.go.wait, READY_TIMEOUT * 2):
            errors["never started"] += 1
            return
        target = shared.target.value.decode() or CHANNEL
        send = partial(layer.group_send, GROUP) if case.workload == "fan-out" else partial(layer.send, target)
        await _send_all(case, index, shared.start_at.value, send, report)
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        errors[f"sender: {exc!r}"] += 1
    finally:
        await close_layer(layer)
        report["cpu"] = cpu_seconds()
        shared.reports.put(("result", "sender", index, report))


async def _send_all(
    case: Case, index: int, start: float, send: Callable[[dict], Awaitable], report: dict[str, Any]
) -> None:
    """From ``start`` on, this sender's ids, each at its time in the schedule when paced."""
    padding = "x" * case.payload_bytes
    await asyncio.sleep(max(0.0, start - time.time()))
    for n, message_id in enumerate(range(index, case.messages, case.senders)):
        if case.paced:
            delay = start + (n * case.senders + index) / case.rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                report["lag"] = max(report["lag"], -delay)
        await _send_one(send, message_id, padding, report)


async def _send_one(
    send: Callable[[dict], Awaitable], message_id: int, padding: str, report: dict[str, Any]
) -> None:
    """Send one message, retrying while the channel is full (up to SEND_TIMEOUT)."""
    first_try = time.time()
    while True:
        sent_at = time.time()
        message = {"type": "bench.message", "id": message_id, "sent": sent_at, "text": padding}
        try:
            await asyncio.wait_for(send(message), SEND_TIMEOUT)
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


# --- receivers -------------------------------------------------------------------------


def receiver_main(case: Case, prefix: str, index: int, shared: Shared) -> None:
    """A receiver process: receive until every delivery is accounted for, or idle, then report.

    It leaves with ``os._exit`` once its report is flushed: a stock channels_redis
    receive may outlive its cancellation, and ``asyncio.run`` would wait for it.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_receiver(case, prefix, index, shared))
    finally:
        shared.reports.close()
        shared.reports.join_thread()
        os._exit(0)


async def _receiving_channels(case: Case, layer: Any, index: int) -> list[tuple[str, int]]:
    """The channels this receiver serves, each with its member number (its place in the fan)."""
    if case.workload == "direct":
        return [(await layer.new_channel(), 0)]
    if case.workload != "fan-out":
        return [(CHANNEL, 0)]
    share = case.members // case.receivers
    channels = [(await layer.new_channel(), index * share + m) for m in range(share)]
    for channel, _ in channels:
        await layer.group_add(GROUP, channel)
    return channels


async def _receiver(case: Case, prefix: str, index: int, shared: Shared) -> None:
    """Connect, start receiving, report ready; stop when told by the watch below; report."""
    layer = case.layer(prefix)
    report: dict[str, Any] = {"keys": array("q"), "latencies": array("d"), "last": 0.0}
    report["errors"] = errors = Counter()
    stopping = False

    async def consume(channel: str, member: int) -> None:
        """Receive and record, until stopped; errors are counted and the loop goes on."""
        while not stopping:
            try:
                message = await layer.receive(channel)
            except Exception as exc:  # noqa: BLE001 - counted, then receive again
                errors[f"receive: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)
                continue
            now = time.time()
            key = message["id"] * case.fan + member
            report["keys"].append(key)
            report["latencies"].append(now - message["sent"])
            report.setdefault("first", now)
            report["last"] = now
            if 0 <= key < len(shared.seen):
                shared.seen[key] = 1

    consumers: list[asyncio.Future] = []
    try:
        await warm_up(layer)
        channels = await _receiving_channels(case, layer, index)
        consumers = [asyncio.ensure_future(consume(channel, member)) for channel, member in channels]
        await asyncio.sleep(SETTLE)
        shared.reports.put(("ready", "receiver", index, [channel for channel, _ in channels]))
        await _until_accounted_for_or_idle(case, consumers, shared)
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        errors[f"receiver: {exc!r}"] += 1
    finally:
        # Stopping cancels a receive that waits on an empty (or stranded-on) channel.
        stopping = True
        for consumer in consumers:
            consumer.cancel()
        if consumers:
            await asyncio.wait(consumers, timeout=getattr(layer, "brpop_timeout", CANCEL_TIMEOUT - 1) + 1)
        if not all(consumer.done() for consumer in consumers):
            errors["a receive() outlived its cancellation"] += 1
        report["cpu"] = cpu_seconds()
        snapshot = {
            **report,
            "keys": array("q", report["keys"]),
            "latencies": array("d", report["latencies"]),
        }
        shared.reports.put(("result", "receiver", index, snapshot))
        await close_layer(layer)


async def _until_accounted_for_or_idle(case: Case, consumers: list[asyncio.Future], shared: Shared) -> None:
    """Return when every delivery arrived somewhere, or none arrived for ``idle_timeout``.

    Both only count once the senders are done; a duplicate is no news.
    """
    done_seen: float | None = None
    arrived, last_news = 0, time.time()
    while not all(consumer.done() for consumer in consumers):
        await asyncio.sleep(WATCH_INTERVAL)
        now_arrived = bytes(shared.seen).count(1)
        if now_arrived != arrived:
            arrived, last_news = now_arrived, time.time()
        if not shared.senders_done.is_set():
            continue
        if done_seen is None:
            done_seen = time.time()
        if arrived >= shared.sent_total.value * case.fan:
            return
        if time.time() - max(done_seen, last_news) >= case.idle_timeout:
            return


# --- one case --------------------------------------------------------------------------


class Reports:
    """What the processes of one case reported: who is ready (with what), and their results."""

    def __init__(self, channel: Any, result: Result) -> None:
        self.channel = channel
        self.result = result
        self.ready: dict[tuple[str, int], Any] = {}
        self.senders: dict[int, dict[str, Any]] = {}
        self.receivers: dict[int, dict[str, Any]] = {}

    def accounted(self, senders: int, receivers: int) -> bool:
        """Whether every process is ready (or already finished, having failed)."""
        finished = {("sender", i) for i in self.senders} | {("receiver", i) for i in self.receivers}
        return len(self.ready.keys() | finished) == senders + receivers

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
                self.ready[(role, index)] = payload
            else:
                (self.senders if role == "sender" else self.receivers)[index] = payload


def run_cases(cases: Sequence[Case], run_id: str, title: Callable[[Case], str]) -> list[Result]:
    """Run the cases one after another, each announced as ``running <title> ...``."""
    results = []
    for case in cases:
        print(f"running {title(case)} ...", flush=True)
        results.append(run_case(case, run_id))
    return results


def run_case(case: Case, run_id: str) -> Result:
    """Run one case end to end: processes, figures, leftovers, flush."""
    started = time.monotonic()
    prefix = "bench" + run_id + re.sub(r"[^a-z0-9]", "", "".join(map(str, case.key)).lower())
    prefix += "p" if case.paced else "s"
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
    reports = Reports(shared.reports, result)
    before = _usage(case)
    processes: list[Any] = []
    try:
        _run_processes(ctx, case, prefix, shared, reports, processes)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                result.problems.append(f"{process.name} did not exit; terminated")
                process.terminate()
                process.join(timeout=5)
    after = _usage(case)
    _figures(result, reports.senders, reports.receivers)
    _cores(result, before, after)
    result.leftovers = asyncio.run(
        using(case.layer(prefix), lambda layer: _leftovers_then_flush(layer, prefix))
    )
    result.seconds = time.monotonic() - started
    return result


def _run_processes(
    ctx: Any, case: Case, prefix: str, shared: Shared, reports: Reports, processes: list[Any]
) -> None:
    """Receivers first (their channels exist, groups joined), then senders; go; collect the results."""

    def start(target: Callable[..., None], count: int) -> None:
        for i in range(count):
            process = ctx.Process(target=target, args=(case, prefix, i, shared), daemon=True)
            processes.append(process)
            process.start()

    start(receiver_main, case.receivers)
    reports.wait_for(lambda: reports.accounted(0, case.receivers), READY_TIMEOUT, "receivers' ready")
    channels = reports.ready.get(("receiver", 0))
    if case.workload == "direct" and channels:
        shared.target.value = channels[0].encode()
    start(sender_main, case.senders)
    reports.wait_for(lambda: reports.accounted(case.senders, case.receivers), READY_TIMEOUT, "ready")
    shared.start_at.value = time.time() + START_DELAY
    shared.go.set()
    sending = case.messages / (min(case.rate, 500.0) if case.paced else 50.0)
    reports.wait_for(lambda: len(reports.senders) == case.senders, START_DELAY + sending + 120, "sender")
    shared.sent_total.value = sum(len(r["sent"]) for r in reports.senders.values())
    shared.senders_done.set()
    receiving = case.idle_timeout + 180.0
    reports.wait_for(lambda: len(reports.receivers) == case.receivers, receiving, "receiver")


def _usage(case: Case) -> tuple[float, float, float, float]:
    """Now: wall clock, the machine's busy CPU, the servers' CPU (NaN: unknown), this process's CPU."""
    servers = case.server_cpu() if case.server_cpu is not None else math.nan
    return time.monotonic(), machine_busy_seconds(), servers, cpu_seconds()


def _cores(result: Result, before: tuple[float, ...], after: tuple[float, ...]) -> None:
    """Average busy cores during the case: the machine, these processes, the servers."""
    wall, machine, servers, parent = (b - a for a, b in zip(before, after, strict=True))
    processes = result.cpu["sender"] + result.cpu["receiver"] + parent
    result.cores = {"machine": machine / wall, "bench": processes / wall, "servers": servers / wall}


async def _leftovers_then_flush(layer: Any, prefix: str) -> tuple[int, int]:
    """Messages still in Redis (queued, and in stock's ``$inflight`` backups); then flush the prefix."""
    queued = inflight = 0
    for index in range(getattr(layer, "ring_size", 0)):
        connection = layer.connection(index)
        queued += await connection.zcard(prefix + CHANNEL)
        inflight += await connection.zcard(prefix + CHANNEL + "$inflight")
    await layer.flush()
    return queued, inflight


def _figures(
    result: Result, senders: dict[int, dict[str, Any]], receivers: dict[int, dict[str, Any]]
) -> None:
    """Counts, rates, latency percentiles and problems from the processes' reports."""
    fan = result.case.fan
    sent_ids = {i for report in senders.values() for i in report["sent"]}
    expected = {i * fan + m for i in sent_ids for m in range(fan)}
    counts = Counter(key for report in receivers.values() for key in report["keys"])
    result.sent, result.expected = len(sent_ids), len(expected)
    result.received = len(counts.keys() & expected)
    result.lost = len(expected - counts.keys())
    result.dup = sum(n - 1 for n in counts.values() if n > 1)
    _latencies(result, receivers.values())
    durations = sorted(x for report in senders.values() for x in report["durations"])
    if durations:
        result.send_p99_ms = percentile(durations, 99) * 1000
    firsts = [r["first"] for r in senders.values() if "first" in r]
    lasts = [r["last"] for r in receivers.values() if "first" in r]
    if firsts and lasts and max(lasts) > min(firsts):
        result.rate = result.received / (max(lasts) - min(firsts))
    result.sender_lag_ms = max((r["lag"] for r in senders.values()), default=0.0) * 1000
    result.full_retries = sum(r["full"] for r in senders.values())
    result.cpu = {
        "sender": sum(r.get("cpu", 0.0) for r in senders.values()),
        "receiver": sum(r.get("cpu", 0.0) for r in receivers.values()),
    }
    errors: Counter = Counter()
    for report in [*senders.values(), *receivers.values()]:
        errors.update(report["errors"])
    result.problems.extend(f"{n} x {what}" for what, n in sorted(errors.items()))


def _latencies(result: Result, receivers: Iterable[dict[str, Any]]) -> None:
    """p50, p99 and max of send-to-receive latency; how the slowest 1% clusters (by message id)."""
    receivers = list(receivers)
    latencies = sorted(x for report in receivers for x in report["latencies"])
    if not latencies:
        return
    result.p50_ms = percentile(latencies, 50) * 1000
    result.p99_ms = percentile(latencies, 99) * 1000
    result.max_ms = latencies[-1] * 1000
    slow = sorted(
        key // result.case.fan
        for report in receivers
        for key, latency in zip(report["keys"], report["latencies"], strict=True)
        if latency * 1000 >= result.p99_ms
    )
    result.tail_bursts = bursts(slow)


# --- report ----------------------------------------------------------------------------


def version(name: str) -> str:
    """An installed distribution's version."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as text."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fmt(value: float, digits: int = 1, grouping: str = "") -> str:
    """A number for a table ('-' when there is none); ``grouping=","`` separates thousands."""
    return "-" if math.isnan(value) else f"{value:{grouping}.{digits}f}"


def ratio(value: float, baseline: float) -> str:
    """value/baseline as text."""
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return "-"
    return f"{value / baseline:.2f}"


def print_table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[object]]) -> None:
    """A table: each column a header and its alignment and width (``"<6"``, ``">8"``).

    A row shorter than the header leaves its last columns out.
    """
    header = "".join(f"{name:{spec}}" for name, spec in columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        print("".join(f"{cell:{spec}}" for (_, spec), cell in zip(columns, row, strict=False)))
    print()


# --- command line ----------------------------------------------------------------------


# One option: flag, type (bool: --flag / --no-flag), default, help.
Option = tuple[str, type, Any, str]
SATURATION: Option = ("--saturation", bool, True, "also run an unpaced pass for throughput")


def parse_command_line(
    description: str, options: Sequence[Option], argv: list[str] | None
) -> argparse.Namespace:
    """The command line of a benchmark: its options, each with its default in the help."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for flag, kind, default, text in options:
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=text)
    return parser.parse_args(argv)


def names(text: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]
