"""The stack without Docker: `make native-up` runs the Procfile's processes under honcho, with
PORT, DATABASE_URL and REDIS_URL set as a platform sets them; `make native-down` leaves no
process behind. Also one-process mode, a site with no channel layer, nginx in front, and the
kit's layer over TLS to a real Redis (a platform's rediss:// URL).

Run on the host by `make test` (scripts/test), as root on Debian: native-up installs
what it needs. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import websockets

REPO = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("TEST_NATIVE_PORT", "18100"))
REDIS_PORT = int(os.environ.get("TEST_NATIVE_REDIS_PORT", "16390"))
BASE = f"http://127.0.0.1:{PORT}"
ORIGIN = "http://localhost"
START_TIMEOUT = 600  # the first run builds the virtualenv
sys.path.insert(0, str(REPO / "tests/e2e"))
from kit_clients import Response, fetch  # noqa: E402  (the end-to-end tests' client)


def http(method: str, path: str, body: dict | None = None, headers: dict | None = None) -> Response:
    data = json.dumps(body).encode() if body is not None else None
    sent = {"Content-Type": "application/json"} if body is not None else {}
    return fetch(BASE + path, method, data, sent | (headers or {}))


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class NativeStack:
    """A `make native-up` running in the background, with its log."""

    process: subprocess.Popen
    log: Path
    pids: set[int] = field(default_factory=set)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until_up(stack: NativeStack) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if stack.process.poll() is not None:
            pytest.fail(f"make native-up exited {stack.process.returncode}:\n{stack.text()[-4000:]}")
        try:
            if http("GET", "/healthz").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the native stack did not answer within {START_TIMEOUT} s:\n{stack.text()[-4000:]}")


@pytest.fixture
def native(tmp_path) -> Iterator:
    """``native(MODE, **env)`` starts `make native-up`; at the end `make native-down` stops it
    and every process it had started must be gone."""
    started: list[NativeStack] = []

    def start(mode: str, **env: str) -> NativeStack:
        log = tmp_path / f"native-{mode}.log"
        environment = os.environ | {
            "NATIVE_MODE": mode,
            "NATIVE_PORT": str(PORT),
            "NATIVE_REDIS_PORT": str(REDIS_PORT),
            "NATIVE_NGINX": "off",
        }
        process = subprocess.Popen(
            ["make", "-C", str(REPO), "native-up"],
            env=environment | env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack = NativeStack(process, log)
        started.append(stack)
        wait_until_up(stack)
        stack.pids = descendants(process.pid)
        return stack

    yield start
    for stack in started:
        down = subprocess.run(
            ["make", "-C", str(REPO), "native-down"], capture_output=True, text=True, timeout=60
        )
        try:
            stack.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(stack.process.pid, signal.SIGKILL)
            pytest.fail(f"make native-up did not end after make native-down:\n{down.stdout}{down.stderr}")
        assert down.returncode == 0, down.stdout + down.stderr
        assert stack.process.returncode == 0, stack.text()[-3000:]
        assert "the native stack is stopped" in stack.text()
        left = sorted(pid for pid in stack.pids if alive(pid))
        assert not left, f"processes left behind: {left}"
        print(f"native-down: {len(stack.pids)} processes started, 0 left")


async def chat_pair(room: str) -> tuple[dict, dict, dict]:
    """Two sockets in a room: both hellos, and what the second got of the first's post."""
    url = f"ws://127.0.0.1:{PORT}/ws/chat/{room}/"
    async with (
        websockets.connect(url, origin=ORIGIN) as first,
        websockets.connect(url, origin=ORIGIN) as second,
    ):
        hellos = [json.loads(await asyncio.wait_for(s.recv(), 10)) for s in (first, second)]
        await first.send(json.dumps({"message": f"hello {room}"}))
        got = json.loads(await asyncio.wait_for(second.recv(), 10))
    return hellos[0], hellos[1], got


def run_task(channel: str) -> dict:
    created = http("POST", "/tasks/", {"channel": channel, "n": 1})
    assert created.status == 202, created.body
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task = http("GET", created.json()["url"]).json()
        if task["status"] in ("done", "failed"):
            return task
        time.sleep(0.2)
    pytest.fail(f"task on {channel} not done in 30 s")


def long_poll_gets_a_post(room: str) -> dict:
    result: dict[str, Response] = {}
    poller = threading.Thread(target=lambda: result.update(r=http("GET", f"/poll/{room}/?timeout=15")))
    poller.start()
    time.sleep(1)

    async def post():
        url = f"ws://127.0.0.1:{PORT}/ws/chat/{room}/"
        async with websockets.connect(url, origin=ORIGIN) as socket:
            await socket.recv()
            await socket.send(json.dumps({"message": "to the poller"}))
            await socket.recv()

    asyncio.run(post())
    poller.join(20)
    assert result["r"].status == 200, result["r"]
    return result["r"].json()


def test_the_procfile_processes_chat_run_tasks_and_stop_without_a_trace(native):
    stack = native("processes")
    # The Procfile's types under honcho, as a platform would run them, beside Redis.
    for name in ("web.1", "worker.1", "worker-slow.1", "redis.1"):
        assert f"{name} started" in stack.text()
    page = http("GET", "/")
    assert page.status == 200 and b'id="send-form"' in page.body
    assert page.headers["X-Served-By"].startswith("daphne/")
    assert http("GET", "/static/chat/chat.js").status == 200  # WhiteNoise: nothing in front
    ready = http("GET", "/readyz").json()
    assert ready["status"] == "ok", ready
    _, _, got = asyncio.run(chat_pair("native"))
    assert got["type"] == "message" and got["message"] == "hello native"
    assert run_task("thumbnail")["status"] == "done" and run_task("tasks")["status"] == "done"
    assert long_poll_gets_a_post("native-lp")["message"] == "to the poller"
    settings = [
        line for line in stack.text().splitlines() if "channels-kit settings" in line and "web.1" in line
    ]
    assert settings and f'"PORT": "{PORT}"' in settings[0]


def test_the_same_host_layer_needs_no_server(native):
    """CHANNEL_BACKEND=local: the Procfile's processes share one SQLite file; no Redis runs."""
    stack = native("processes", CHANNEL_BACKEND="local")
    assert "redis.1" not in stack.text() and "same-host layer" in stack.text()
    _, _, got = asyncio.run(chat_pair("local"))
    assert got["message"] == "hello local"
    assert run_task("thumbnail")["status"] == "done" and run_task("tasks")["status"] == "done"
    assert long_poll_gets_a_post("local-lp")["message"] == "to the poller"
    layer = {"CHANNEL_BACKEND": "local", "LOCAL_LAYER_PATH": str(REPO / ".native/layer.sqlite3")}
    layer["DJANGO_SECRET_KEY"] = "only-to-read-the-status"
    status = subprocess.run(
        [REPO / ".venv-native/bin/python", "manage.py", "channels_status", "--json"],
        cwd=REPO / "app/demo", env=os.environ | layer, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    report = json.loads(status.stdout)
    assert report["backend"].startswith("channels_kit.layers.local")
    assert {"tasks", "thumbnail"} <= set(report["channels"]) and report["workers_live"] == 2


def test_one_process_mode_serves_everything_and_says_it_cannot_scale(native):
    stack = native("one-process")
    assert "web.1 started" in stack.text() and "worker.1" not in stack.text()
    assert "groups and background channels reach no other process" in stack.text()
    _, _, got = asyncio.run(chat_pair("one"))
    assert got["message"] == "hello one"
    assert run_task("thumbnail")["status"] == "done" and run_task("tasks")["status"] == "done"
    assert long_poll_gets_a_post("one-lp")["message"] == "to the poller"
    assert http("GET", "/").status == 200 and http("GET", "/static/chat/chat.css").status == 200


def test_with_no_channel_layer_the_site_is_plain_wsgi_and_says_what_is_off(native):
    stack = native("wsgi")
    page = http("GET", "/")
    assert page.status == 200 and b'id="live-off"' in page.body and b"chat.js" not in page.body
    assert page.headers["X-Served-By"].startswith("uwsgi/")
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    started = time.monotonic()
    assert http("GET", "/ws/chat/lobby/", headers=upgrade).status == 404
    assert time.monotonic() - started < 5  # answered, not left hanging
    task = http("POST", "/tasks/", {"n": 1})
    assert task.status == 503 and "without a channel layer" in task.json()["error"]
    assert http("GET", "/poll/lobby/").status == 503
    ready = http("GET", "/readyz").json()
    assert ready["status"] == "ok" and "skipped" in ready["checks"]["channel_layer"]
    assert "uwsgi" in stack.text()


def test_relay_mode_behind_nginx(native):
    """nginx from Debian in front (it serves the static files), the web process the kit's relay,
    the workers running the project."""
    stack = native("processes", NATIVE_NGINX="on", ASGI_MODE="relay")
    assert "nginx.1 started" in stack.text()
    static = http("GET", "/static/chat/chat.js")
    assert static.status == 200 and "X-Served-By" not in static.headers
    page = http("GET", "/")
    assert page.status == 200 and page.headers["X-Served-By"].startswith("worker/")
    assert page.headers["X-Relayed-By"].startswith("daphne/")
    hello, _, got = asyncio.run(chat_pair("relay"))
    assert hello["server"].startswith("worker/") and got["message"] == "hello relay"
    assert run_task("thumbnail")["status"] == "done"


def test_a_project_of_your_own_runs_without_docker(native):
    """PROJECT_DIR=tests/projects/mysite (the Channels tutorial's shape: SQLite and a Redis at
    127.0.0.1:6379 in its settings, Django 5.2 on this host's Python): the Procfile's processes
    run it from its own directory under the kit's settings, nginx in front."""
    stack = native("processes", PROJECT_DIR="tests/projects/mysite", NATIVE_NGINX="on")
    text = stack.text()
    assert "native stack of mysite" in text and "worker.1 started" in text
    assert "worker-slow" not in text  # the project routes no slow channel
    assert "replaced CHANNEL_LAYERS: channels_redis.core.RedisChannelLayer 127.0.0.1:6379" in text
    page = http("GET", "/chat/")
    assert page.status == 200 and b"What chat room" in page.body
    script = http("GET", "/static/chat/room.js")
    assert script.status == 200 and "X-Served-By" not in script.headers  # nginx, from STATIC_ROOT
    assert script.body == (REPO / "tests/projects/mysite/chat/static/chat/room.js").read_bytes()

    async def group() -> list[str]:
        urls = [f"ws://127.0.0.1:{PORT}/ws/{kind}/native/" for kind in ("chat", "sync-chat")]
        async with (
            websockets.connect(urls[0], origin=ORIGIN) as first,
            websockets.connect(urls[1], origin=ORIGIN) as second,
        ):
            await asyncio.sleep(0.3)
            await first.send(json.dumps({"message": "from mysite"}))
            return [json.loads(await asyncio.wait_for(s.recv(), 10))["message"] for s in (first, second)]

    assert asyncio.run(group()) == ["from mysite", "from mysite"]
    created = http("POST", "/chat/tasks/", {"number": 9})
    assert created.status == 202, created.body
    deadline = time.monotonic() + 30
    while (task := http("GET", f"/chat/tasks/{created.json()['id']}/").json())["status"] != "done":
        assert time.monotonic() < deadline, task
        time.sleep(0.2)
    assert task["result"] == 81


# --- a platform's Redis over TLS ------------------------------------------------------


@pytest.fixture
def tls_redis(tmp_path, native) -> Iterator[tuple[int, Path]]:
    """Debian's redis-server on loopback with TLS only and a fresh self-signed certificate
    (beside a native stack, whose start installs redis-server and the virtualenv)."""
    native("processes")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key, "-out", cert],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = REDIS_PORT + 1
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
         "--tls-auth-clients", "no", "--requirepass", "platform-secret", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1)
    yield port, cert
    server.terminate()
    server.wait(10)


LAYER_ROUND_TRIP = """
import asyncio, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django.conf.global_settings")
from channels_kit.conf import channel_layer_from_env

async def main():
    layer = channel_layer_from_env()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "over.tls"})
    print((await asyncio.wait_for(layer.receive(channel), 10))["type"])
    await layer.close_pools()

asyncio.run(main())
"""


def test_the_layer_reaches_a_platform_redis_over_tls(tls_redis):
    port, cert = tls_redis
    python = REPO / ".venv-native" / "bin" / "python"
    url = f"rediss://:platform-secret@127.0.0.1:{port}/0"
    base = {"PATH": os.environ["PATH"], "REDIS_TLS_URL": url, "REDIS_URL": "redis://unused:1/0"}

    def round_trip(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [python, "-c", LAYER_ROUND_TRIP], env=base | env, capture_output=True, text=True, timeout=60
        )

    # A platform with a self-signed certificate: no check (REDIS_SSL_CERT_REQS=none).
    assert round_trip(REDIS_SSL_CERT_REQS="none").stdout.strip() == "over.tls"
    # The default checks the certificate: refused without its CA, accepted with it.
    refused = round_trip()
    assert refused.returncode != 0 and "certificate" in refused.stderr.lower()
    assert round_trip(REDIS_SSL_CA_CERTS=str(cert)).stdout.strip() == "over.tls"
