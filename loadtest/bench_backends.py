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

Run it with ``loadtest/bin/bench-layer`` (``make bench-layer``): it needs
``TEST_REDIS_SHARD_URLS`` (four servers), ``TEST_RABBITMQ_URL`` and ``TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from functools import partial
from typing import Any

import layer_harness as harness

from channels_kit.layers.local import LocalChannelLayer
from channels_kit.layers.postgres import PostgresChannelLayer
from channels_kit.layers.rabbitmq import RabbitMQChannelLayer
from channels_kit.layers.redis import RedisChannelLayer

BACKENDS = ("redis-1", "redis-4", "rabbitmq", "postgres", "local")
# Workload -> (the harness's workload, receiving processes).
WORKLOADS = {"direct": ("direct", 1), "general-1": ("general", 1), "general-4": ("general", 4)}
WORKLOADS["fan-out"] = ("fan-out", 4)
BASELINE = "redis-1"
SENDERS = 4  # sender processes of every workload but fan-out (one group sender)
FANOUT_MEMBERS = 100
CAPACITY = 100_000  # no backend throttles the senders
COLUMNS = [("backend", "<10"), ("workload", "<11"), ("pass", "<7"), ("deliveries", ">11"), ("lost", ">6")]
COLUMNS += [("dup", ">5"), ("msg/s", ">9"), ("p50 ms", ">9"), ("p99 ms", ">9")]


def make_layer(backend: str, local_path: str, prefix: str) -> Any:
    """A fresh layer of ``backend``, as one process of the deployment would build it."""
    common = {"prefix": prefix, "capacity": CAPACITY, "expiry": 60}
    if backend.startswith("redis-"):
        urls = harness.names(os.environ["TEST_REDIS_SHARD_URLS"])[: int(backend.removeprefix("redis-"))]
        return RedisChannelLayer(hosts=harness.redis_hosts(urls, 30), **common)
    if backend == "rabbitmq":
        return RabbitMQChannelLayer(url=os.environ["TEST_RABBITMQ_URL"], **common)
    if backend == "postgres":
        return PostgresChannelLayer(url=os.environ["TEST_POSTGRES_URL"], **common)
    if backend == "local":
        return LocalChannelLayer(path=local_path, **common)
    raise ValueError(backend)


def make_case(backend: str, workload: str, messages: int, rate: float, local_path: str) -> harness.Case:
    """``workload`` on ``backend``: ``messages`` sends (group sends for fan-out), ``rate`` per second."""
    kind, receivers = WORKLOADS[workload]
    fanout = kind == "fan-out"
    return harness.Case(
        key=(backend, workload),
        label=f"{backend} {workload} {'paced' if rate else 'max'}",
        layer=partial(make_layer, backend, local_path),
        workload=kind,
        senders=1 if fanout else SENDERS,
        receivers=receivers,
        messages=messages,
        rate=rate,
        members=FANOUT_MEMBERS if fanout else 1,
    )


# --- report --------------------------------------------------------------------------


def title(case: harness.Case) -> str:
    """A case as its progress line names it."""
    backend, workload = case.key
    return f"{backend} {workload} {'paced' if case.paced else 'unpaced'}"


def print_facts(args: argparse.Namespace) -> None:
    print("== channel backends side by side")
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}; load average {harness.load_average()}")
    print(
        f"python {platform.python_version()}; channels {harness.version('channels')}; "
        f"redis-py {harness.version('redis')}; aiormq {harness.version('aiormq')}; "
        f"psycopg {harness.version('psycopg')}; sqlite {sqlite3.sqlite_version}"
    )
    print(
        f"workloads: {SENDERS} senders (fan-out: 1 group sender, {FANOUT_MEMBERS} members in "
        f"{WORKLOADS['fan-out'][1]} processes); paced at {args.rate:g} sends/s ({args.fanout_rate:g} group "
        f"sends/s), {args.messages} sends ({args.fanout_messages} group sends) per case; 100-byte payload"
    )
    print()


def table_row(r: harness.Result) -> list[object]:
    backend, workload = r.case.key
    row = [backend, workload, "paced" if r.case.paced else "max", f"{r.received:,}", r.lost, r.dup]
    return [*row, harness.fmt(r.rate, 0, ","), harness.fmt(r.p50_ms, 1, ","), harness.fmt(r.p99_ms, 1, ",")]


def print_ratios(results: list[harness.Result]) -> None:
    """Per backend and workload: unpaced msg/s and paced p99, each as a ratio to Redis on one server."""
    by_key = {(*r.case.key, r.case.paced): r for r in results}
    print(f"ratios to {BASELINE} (msg/s unpaced: higher is better; p99 paced: lower is better)")
    for backend in dict.fromkeys(r.case.key[0] for r in results):
        if backend == BASELINE:
            continue
        parts = []
        for workload in dict.fromkeys(r.case.key[1] for r in results):
            here, base = by_key.get((backend, workload, False)), by_key.get((BASELINE, workload, False))
            fast = harness.ratio(here.rate, base.rate) if here and base else "-"
            here, base = by_key.get((backend, workload, True)), by_key.get((BASELINE, workload, True))
            tail = harness.ratio(here.p99_ms, base.p99_ms) if here and base else "-"
            parts.append(f"{workload} x{fast} / x{tail}")
        print(f"  {backend}: " + "; ".join(parts))
    print()


def print_problems(results: list[harness.Result]) -> None:
    troubled = [r for r in results if r.problems]
    for r in troubled:
        print(f"  {r.case.label}: " + "; ".join(r.problems))
    if troubled:
        print()


# --- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    options: list[harness.Option] = [
        ("--backends", str, ",".join(BACKENDS), "backends, comma-separated"),
        ("--workloads", str, ",".join(WORKLOADS), "workloads, comma-separated"),
        ("--rate", float, 1000.0, "paced sends per second, all senders"),
        ("--messages", int, 3000, "sends per case"),
        ("--fanout-rate", float, 20.0, "paced group sends per second"),
        ("--fanout-messages", int, 100, "group sends per fan-out case"),
        harness.SATURATION,
    ]
    description = "Compare the channel backends side by side (prints figures)."
    return harness.parse_command_line(description, options, argv)


def plan(
    args: argparse.Namespace, backends: list[str], workloads: list[str], local_path: str
) -> list[harness.Case]:
    """The paced pass (every workload, backends side by side), then the unpaced one when asked for."""
    cases = []
    for paced in [True, False] if args.saturation else [True]:
        for workload in workloads:
            fanout = workload == "fan-out"
            messages = args.fanout_messages if fanout else args.messages
            rate = (args.fanout_rate if fanout else args.rate) if paced else 0.0
            cases += [make_case(backend, workload, messages, rate, local_path) for backend in backends]
    return cases


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends, workloads = harness.names(args.backends), harness.names(args.workloads)
    unknown = (set(backends) - set(BACKENDS)) | (set(workloads) - WORKLOADS.keys())
    if unknown:
        print(
            f"unknown: {', '.join(sorted(unknown))} (backends {BACKENDS}, workloads {tuple(WORKLOADS)})",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    print_facts(args)
    run_id = uuid.uuid4().hex[:6]
    local_path = os.path.join(tempfile.gettempdir(), f"bench-backends-{run_id}.sqlite3")
    cases = plan(args, backends, workloads, local_path)
    results = harness.run_cases(cases, run_id, title)
    print()
    harness.print_table(COLUMNS, [table_row(r) for r in results])
    print_ratios(results)
    print_problems(results)
    print(f"total run time: {time.monotonic() - started:.0f} s; load average now {harness.load_average()}")
    broken = [r for r in results if r.lost or r.dup]
    for r in broken:
        print(f"FAIL: {r.case.key[0]} {r.case.key[1]}: {r.lost} lost, {r.dup} duplicated")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
