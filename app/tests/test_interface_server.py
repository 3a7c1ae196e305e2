"""The kit's Daphne server: what it adds to Daphne's own (the backlog; lifespan events, from a
real server process)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from channels_kit.interface_server import KitDaphneServer, with_backlog

APP_DIR = Path(__file__).resolve().parents[1]


async def app(scope, receive, send):  # never called: no server runs here
    raise AssertionError


def test_tcp_endpoints_get_a_listen_backlog_others_are_left_alone():
    assert (
        with_backlog("tcp:port=8000:interface=0.0.0.0", 1024)
        == "tcp:port=8000:interface=0.0.0.0:backlog=1024"
    )
    assert with_backlog("tcp:port=8000:backlog=64", 1024) == "tcp:port=8000:backlog=64"
    assert with_backlog("unix:/run/daphne.sock", 1024) == "unix:/run/daphne.sock"
    assert with_backlog("tcp:port=8000", 0) == "tcp:port=8000"


def test_the_server_listens_with_the_configured_backlog(monkeypatch):
    monkeypatch.setenv("DAPHNE_LISTEN_BACKLOG", "2048")
    monkeypatch.setenv("DAPHNE_METRICS_PORT", "0")
    server = KitDaphneServer(
        application=app, endpoints=["tcp:port=8000:interface=0.0.0.0", "fd:domain=INET:fileno=3"]
    )
    assert server.endpoints == ["tcp:port=8000:interface=0.0.0.0:backlog=2048", "fd:domain=INET:fileno=3"]
    monkeypatch.delenv("DAPHNE_LISTEN_BACKLOG")
    default = KitDaphneServer(application=app, endpoints=["tcp:port=8000"])
    assert default.endpoints == ["tcp:port=8000:backlog=1024"]


# --- lifespan events, from a real server process ------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(application: str, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """``python -m channels_kit.interface_server`` serving ``tests.lifespan_app:<application>``,
    once it answers; its output in ``tmp_path / "out"``."""
    port = free_port()
    env = os.environ | {
        "LIFESPAN_TEST_LOG": str(tmp_path / "lifespan"),
        "DAPHNE_DRAIN_SECONDS": "1",
        "DAPHNE_METRICS_PORT": "0",
    }
    command = [sys.executable, "-m", "channels_kit.interface_server", "-b", "127.0.0.1", "-p", str(port)]
    with open(tmp_path / "out", "wb") as out:
        process = subprocess.Popen(
            [*command, f"tests.lifespan_app:{application}"], cwd=APP_DIR, env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                assert response.read() == b"ok"
            return process, port
        except OSError:
            assert process.poll() is None, (tmp_path / "out").read_text()
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"the server did not answer within 30 s:\n{(tmp_path / 'out').read_text()}")


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    finally:
        process.kill()


def test_the_server_sends_lifespan_startup_and_after_its_drain_shutdown(tmp_path):
    process, _ = serve("noting", tmp_path)
    log = tmp_path / "lifespan"
    assert log.read_text().splitlines() == ["lifespan.startup"]
    assert stop(process) == 0, (tmp_path / "out").read_text()
    # Daphne exits once the application's clean-up is done, not before.
    assert log.read_text().splitlines() == ["lifespan.startup", "lifespan.shutdown", "cleaned up"]


def test_an_application_that_takes_no_lifespan_events_is_served_as_before(tmp_path):
    process, _ = serve("refusing", tmp_path)
    assert stop(process) == 0
    out = (tmp_path / "out").read_text()
    assert "the application takes no lifespan events (Django can only handle" in out, out
    assert "Traceback" not in out, out
