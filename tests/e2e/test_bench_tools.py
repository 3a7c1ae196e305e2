"""Tiny, bounded runs of `make bench-broadcast`'s and `make bench-sockets`' own clients
against the test stack (both modes) and the reference peer: their counts must be right
(no broadcast missing or repeated, every socket held and answering), whatever the
timings. The benchmarks themselves print figures; these only prove the tools count true.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BASE_URL, REPO, compose, parts

pytestmark = parts("direct")

NODE = REPO / "loadtest" / "node"
NODE_ENV = dict(os.environ, NODE_PATH=os.environ.get("NODE_PATH", "/usr/share/nodejs"))


def broadcast_steps(url: str, steps: str, host: str | None = None) -> list[dict]:
    env = dict(NODE_ENV, WS_HOST=host or "")
    # A limit of 10 s: on shared cores only the counts are judged, not the timings.
    out = subprocess.run(
        ["node", str(NODE / "broadcast-client.js"), url, steps, "20", "4", "10000"],
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def reference_server():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["node", str(NODE / "reference-server.js"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=NODE_ENV,
    )
    assert "server on" in server.stdout.readline()
    yield server, port
    server.terminate()
    server.wait(10)


def test_the_broadcast_client_counts_every_receipt_on_the_kit(capsys):
    url = BASE_URL.replace("http://", "ws://", 1) + "/ws/shootout/"
    steps = broadcast_steps(url, "10 30")
    with capsys.disabled():
        print(
            f"\n  broadcast client on the kit: {[(s['clients'], s['missing'], s['repeated']) for s in steps]}"
        )
    assert [s["clients"] for s in steps] == [10, 30]
    for step in steps:
        assert (step["samples"], step["missing"], step["repeated"], step["timed_out"], step["closed"]) == (
            20,
            0,
            0,
            0,
            0,
        )
        assert step["passed"] and step["p95_ms"] <= step["max_ms"]


def test_the_broadcast_client_and_the_reference_server_agree(reference_server):
    _, port = reference_server
    steps = broadcast_steps(f"ws://127.0.0.1:{port}/", "10 50")
    assert [(s["clients"], s["missing"], s["repeated"], s["passed"]) for s in steps] == [
        (10, 0, 0, True),
        (50, 0, 0, True),
    ]


def daphne_pid() -> tuple[int, str]:
    """The host pid of the first Daphne replica's server process (the child of its init)."""
    container = compose("ps", "--quiet", "daphne").stdout.split()[0]
    init = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", container],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return int(Path(f"/proc/{init}/task/{init}/children").read_text().split()[0]), container


def test_the_sockets_tool_holds_and_pings_sockets_on_a_daphne_process(capsys):
    pid, container = daphne_pid()
    ip = subprocess.run(
        [
            "docker",
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            container,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    started = time.monotonic()
    out = subprocess.run(
        [
            "python3",
            str(REPO / "loadtest" / "bench_sockets.py"),
            "--target",
            "test",
            "--url",
            f"ws://{ip}:8000/ws/echo/",
            "--pid",
            str(pid),
            "--steps",
            "50 200",
            "--clients",
            "2",
            "--client-cpus",
            "0-1",
            "--host",
            "localhost",
            "--pings",
            "20",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
        env=NODE_ENV,
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    steps, (limits,) = lines[:-1], lines[-1:]
    with capsys.disabled():
        print(
            f"\n  sockets tool on a Daphne: {[(s['sockets'], s['kb_per_socket']) for s in steps]} KB each"
            f" (tiny counts: noisy), in {time.monotonic() - started:.0f} s"
        )
    assert [(s["sockets"], s["failed"], s["closed"], s["answered"], s["passed"]) for s in steps] == [
        (50, 0, 0, 20, True),
        (200, 0, 0, 20, True),
    ]
    assert int(limits["limits"]["server_open_files"]) > 200
