#!/usr/bin/env python3
"""Channel layer benchmark: the kit's RedisChannelLayer beside stock channels_redis.

For every (layer, shards, receivers) it starts sender and receiver processes,
each with its own event loop and layer instance, on one general channel with a
fresh prefix. Senders pace a target total rate; every message carries its id and
its send time, so receivers measure send-to-receive latency and the run counts
lost and duplicated messages. An optional second pass sends unpaced, for
throughput. Prints figures, not a verdict: the exit status is non-zero only when
the kit's layer lost a message.

Run it with ``loadtest/bin/bench-layer`` (``make bench-layer``); it needs four Redis
servers in ``TEST_REDIS_SHARD_URLS`` (comma-separated).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

import channels_redis.core
from layer_harness import (
    SATURATION,
    Case,
    Option,
    Result,
    fmt,
    load_average,
    names,
    parse_command_line,
    print_table,
    ratio,
    redis_hosts,
    run_cases,
    using,
    version,
)

from channels_kit.layers.redis import RedisChannelLayer as KitRedisChannelLayer

LAYERS: dict[str, type] = {
    "kit": KitRedisChannelLayer,
    "stock": channels_redis.core.RedisChannelLayer,
}
ACCEPTANCE_SHARDS, ACCEPTANCE_RECEIVERS, ACCEPTANCE_P99_MS = 4, 1, 50.0
OTHER_LOAD_WARNING = 0.25  # cores busy with other work during a case, above which a note says so
# The table: paced figures, then the saturation pass's (when it ran) behind " |".
COLUMNS = [("impl", "<6"), ("shards", ">7"), ("recv", ">5"), ("sent", ">7"), ("received", ">9")]
COLUMNS += [("lost", ">6"), ("dup", ">6"), ("msg/s", ">8"), ("p50 ms", ">8"), ("p99 ms", ">8")]
COLUMNS += [("max ms", ">9")]
SATURATION_COLUMNS = [(" |", ""), ("sat msg/s", ">10"), ("sat lost", ">9"), ("sat dup", ">8")]


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """Settings shared by every case of one run."""

    urls: list[str]
    senders: int
    rate: float
    idle_timeout: float
    capacity: int
    expiry: int
    socket_timeout: float
    payload_bytes: int


def make_layer(impl: str, options: Options, shards: int, prefix: str) -> Any:
    """A fresh layer instance of one implementation on the first ``shards`` servers."""
    hosts = redis_hosts(options.urls[:shards], options.socket_timeout)
    return LAYERS[impl](hosts=hosts, prefix=prefix, capacity=options.capacity, expiry=options.expiry)


def make_case(options: Options, impl: str, shards: int, receivers: int, messages: int, paced: bool) -> Case:
    """One case: ``impl`` on ``shards`` servers, ``receivers`` processes on the general channel."""
    kind = "paced" if paced else "saturation"
    return Case(
        key=(impl, shards, receivers),
        label=f"{impl} {shards} shard(s) {receivers} receiver(s) {kind}",
        layer=partial(make_layer, impl, options, shards),
        senders=options.senders,
        receivers=receivers,
        messages=messages,
        rate=options.rate if paced else 0.0,
        payload_bytes=options.payload_bytes,
        idle_timeout=options.idle_timeout,
        server_cpu=lambda: asyncio.run(redis_info(options, redis_cpu_seconds)),
    )


async def redis_info(options: Options, read: Any) -> Any:
    """``read(layer)`` on a stock layer over every server (for INFO)."""
    return await using(make_layer("stock", options, len(options.urls), "bench-info-"), read)


async def redis_cpu_seconds(layer: Any) -> float:
    """CPU seconds used so far by every Redis server of ``layer`` (``INFO cpu``)."""
    total = 0.0
    for index in range(layer.ring_size):
        info = await layer.connection(index).info("cpu")
        total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


async def redis_facts(urls: list[str], layer: Any) -> list[str]:
    """``redis_version`` (and a few more) of every server (``urls``, of ``layer``), from INFO."""
    facts = []
    for index, url in enumerate(urls):
        info = await layer.connection(index).info("server")
        facts.append(
            f"{url}: Redis {info.get('redis_version')} ({info.get('multiplexing_api')}, "
            f"{info.get('arch_bits')}-bit, io-threads {info.get('io_threads_active', 0)})"
        )
    return facts


# --- report --------------------------------------------------------------------------


def print_facts(options: Options) -> None:
    """The machine and software the figures come from."""
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print("== channel layer benchmark")
    print(f"machine: {cores} cores ({usable} usable), {platform.platform()}")
    print(
        f"python {platform.python_version()}; redis-py {version('redis')}; "
        f"channels_redis {version('channels-redis')}; channels {version('channels')}"
    )
    for line in asyncio.run(redis_info(options, partial(redis_facts, options.urls))):
        print(f"server {line}")
    print(f"load average before the run: {load_average()} (other work on the machine skews the figures)")
    print(
        f"workload: {options.senders} senders, paced at {options.rate:g} msg/s in total, "
        f"{options.payload_bytes}-byte payload, capacity {options.capacity}, "
        f"socket timeout {options.socket_timeout:g} s, idle timeout {options.idle_timeout:g} s"
    )
    print()


def table_row(r: Result, s: Result | None) -> list[object]:
    """A paced case's row, with its saturated twin's throughput and losses when there is one."""
    impl, shards, receivers = r.case.key
    row = [impl, shards, receivers, r.sent, r.received, r.lost, r.dup]
    row += [fmt(r.rate, 0), fmt(r.p50_ms), fmt(r.p99_ms), fmt(r.max_ms)]
    if s is not None:
        row += [" |", fmt(s.rate, 0), s.lost, s.dup]
    return row


def print_ratios(paced: list[Result], saturated: dict[tuple[Any, ...], Result]) -> None:
    """kit/stock per (shards, receivers): throughput (higher is better) and p99 (lower is better)."""
    by_key = {r.case.key: r for r in paced}
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


def note(r: Result) -> str:
    """The details of one case, on one line."""
    parts = [
        f"{r.seconds:.1f} s",
        f"send p99 {fmt(r.send_p99_ms, 2)} ms",
        f"lag {r.sender_lag_ms:.0f} ms",
        f"cpu/msg {per_message_us(r.cpu['sender'], r.sent)} | "
        f"{per_message_us(r.cpu['receiver'], r.received)} us",
    ]
    if r.case.paced and r.tail_bursts[0]:
        parts.append(f"slowest 1% in {r.tail_bursts[0]} run(s), longest {r.tail_bursts[1]}")
    parts.append(
        f"cores {fmt(r.cores['machine'], 2)} = {fmt(r.cores['bench'], 2)} "
        f"+ redis {fmt(r.cores['servers'], 2)} + other {fmt(r.other_cores(), 2)}"
    )
    queued, inflight = r.leftovers
    if queued or inflight:
        parts.append(f"left in Redis: {queued} queued, {inflight} in $inflight")
    if r.full_retries:
        parts.append(f"{r.full_retries} ChannelFull retries")
    parts.extend(r.problems)
    return f"  {r.case.label}: " + "; ".join(parts)


def print_notes(results: list[Result]) -> None:
    """Per-case details behind the table: send times, pacing, CPU, leftovers, errors."""
    print(
        "details: send p99 = one send() call; lag = worst delay behind the pacing schedule; "
        "cpu/msg = process CPU per message, senders | receivers; slowest 1% = runs of nearby "
        "messages (few long runs: the machine stalled, not the layer); cores = average busy cores "
        "of the machine, split into these processes, the Redis servers and everything else"
    )
    for r in results:
        print(note(r))
    print()


def print_verdict(paced: list[Result], options: Options) -> None:
    """The acceptance case's verdict, and a note when other work kept the machine busy."""
    key = ("kit", ACCEPTANCE_SHARDS, ACCEPTANCE_RECEIVERS)
    acceptance = next((r for r in paced if r.case.key == key), None)
    if acceptance is not None:
        verdict = "met" if acceptance.lost == 0 and acceptance.p99_ms <= ACCEPTANCE_P99_MS else "NOT met"
        print(
            f"acceptance (kit): {ACCEPTANCE_SHARDS} shards, {ACCEPTANCE_RECEIVERS} receiver, "
            f"{acceptance.case.messages:,} messages from {options.senders} senders: "
            f"lost={acceptance.lost} p99={fmt(acceptance.p99_ms)} ms "
            f"(goal <= {ACCEPTANCE_P99_MS:g} ms): {verdict}"
        )
    else:
        print("acceptance case (kit, 4 shards, 1 receiver) was not run")
    busiest = max((r.other_cores() for r in paced if not math.isnan(r.other_cores())), default=0.0)
    if busiest > OTHER_LOAD_WARNING:
        print(
            f"note: other work kept up to {busiest:.2f} cores busy during a paced case; on a shared "
            "machine latency tails measure the machine, not the layer: rerun when it is idle"
        )


# --- main ----------------------------------------------------------------------------


OPTIONS: list[Option] = [
    ("--rate", float, 2000.0, "paced send rate, msg/s over all senders"),
    ("--messages", int, 10_000, "messages of the acceptance case (4 shards, 1 receiver)"),
    ("--messages-small", int, 4_000, "messages of every other case"),
    ("--senders", int, 4, "sender processes"),
    ("--shards", str, "1,2,4", "shard counts, comma-separated (at most 4)"),
    ("--receivers", str, "1,4", "receiver process counts, comma-separated"),
    ("--impls", str, "kit,stock", "layers to compare: kit, stock"),
    SATURATION,
    ("--saturation-messages", int, 4_000, "messages per saturation case"),
    (
        "--idle-timeout",
        float,
        3.0,
        "receivers give up this long after the last message once the senders are done",
    ),
    ("--capacity", int, 100_000, "channel capacity (high, so neither layer throttles the senders)"),
    ("--expiry", int, 60, "message expiry, seconds"),
    ("--socket-timeout", float, 30.0, "Redis client socket timeout (the kit's REDIS_SOCKET_TIMEOUT default)"),
    ("--payload-bytes", int, 100, "text carried by each message"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    description = "Benchmark the kit's channel layer against stock channels_redis (prints figures)."
    return parse_command_line(description, OPTIONS, argv)


def int_list(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``."""
    return [int(part) for part in names(text)]


def plan(args: argparse.Namespace, options: Options) -> list[Case]:
    """Every paced case (impls side by side), then every saturation case when asked for."""
    shard_counts, receiver_counts = int_list(args.shards), int_list(args.receivers)
    grid = [(s, n, impl) for s in shard_counts for n in receiver_counts for impl in names(args.impls)]

    def paced_messages(shards: int, receivers: int) -> int:
        acceptance = (shards, receivers) == (ACCEPTANCE_SHARDS, ACCEPTANCE_RECEIVERS)
        return args.messages if acceptance else args.messages_small

    cases = [make_case(options, impl, s, n, paced_messages(s, n), True) for s, n, impl in grid]
    if args.saturation:
        cases += [make_case(options, impl, s, n, args.saturation_messages, False) for s, n, impl in grid]
    return cases


def options_from(args: argparse.Namespace) -> Options | str:
    """The run's options, or why there can be none."""
    urls = names(os.environ.get("TEST_REDIS_SHARD_URLS", ""))
    most_shards = max(int_list(args.shards))
    if len(urls) < most_shards:
        return f"TEST_REDIS_SHARD_URLS must list {most_shards} Redis URLs (got {len(urls)})"
    if unknown := set(names(args.impls)) - LAYERS.keys():
        return f"unknown --impls: {', '.join(sorted(unknown))} (choose from {', '.join(LAYERS)})"
    return Options(
        urls=urls,
        senders=args.senders,
        rate=args.rate,
        idle_timeout=args.idle_timeout,
        capacity=args.capacity,
        expiry=args.expiry,
        socket_timeout=args.socket_timeout,
        payload_bytes=args.payload_bytes,
    )


def main(argv: list[str] | None = None) -> int:
    """Run every case, print the report; 1 when the kit's layer lost a message."""
    args = parse_args(argv)
    started = time.monotonic()
    options = options_from(args)
    if isinstance(options, str):
        print(options, file=sys.stderr)
        return 2
    print_facts(options)
    results = run_cases(
        plan(args, options), uuid.uuid4().hex[:8], lambda c: f"{c.label}, {c.messages} messages"
    )
    paced = [r for r in results if r.case.paced]
    saturated = {r.case.key: r for r in results if not r.case.paced}
    print_table(
        COLUMNS + (SATURATION_COLUMNS if saturated else []),
        [table_row(r, saturated.get(r.case.key)) for r in paced],
    )
    print_ratios(paced, saturated)
    print_notes(results)
    print_verdict(paced, options)
    print(f"total run time: {time.monotonic() - started:.0f} s; load average now {load_average()}")
    kit_lost = sum(r.lost for r in results if r.case.key[0] == "kit")
    if kit_lost:
        print(f"FAIL: the kit's layer lost {kit_lost} message(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
