"""End-to-end tests against the real stack started by `make up` (see scripts/test).

KIT_BASE_URL points at nginx; COMPOSE_PROJECT_NAME names the stack under test. Each module
names the parts of scripts/test that run it (``pytestmark = parts(...)``); a part runs
``pytest tests/e2e -m <part>``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import websockets

from kit_clients import Response, fetch

REPO = Path(__file__).resolve().parents[2]
# The stack's settings: scripts/test gives the test stack a file of its own (.env.test).
ENV_FILE = Path(os.environ.get("COMPOSE_ENV_FILES") or REPO / ".env")
BASE_URL = os.environ.get("KIT_BASE_URL", "http://127.0.0.1:8000")
# direct: Daphne runs the project; relay: Daphne relays, workers run it (scripts/test sets it).
ASGI_MODE = os.environ.get("KIT_ASGI_MODE", "direct")
# Who runs the project's code for the ASGI tier, as X-Served-By and hello frames name it.
ASGI_APP_ROLE = "worker/" if ASGI_MODE == "relay" else "daphne/"
WS_URL = BASE_URL.replace("http://", "ws://", 1)
# A browser on the site sends this Origin; Daphne rejects sockets from other origins.
ORIGIN = "http://localhost"


# The parts of scripts/test that run end-to-end tests, each on its own stack: a module's
# marks say which run it (`pytest tests/e2e -m relay`).
PARTS = {
    "direct": "the demo stack in direct mode, on Redis (part 4): every module but relay/'s",
    "local": "the demo stack on the same-host layer, CHANNEL_BACKEND=local (part 5)",
    "rabbitmq": "the demo stack on RabbitMQ in relay mode (part 6)",
    "postgres": "the demo stack on PostgreSQL in relay mode (part 7)",
    "relay": "the demo stack in relay mode with Prometheus (part 8)",
    "replicas": "the demo stack in relay mode with replicated shards, REDIS_REPLICAS=1 (part 8)",
    "project_direct": "tests/projects/mysite's stack in direct mode (part 9)",
    "project_relay": "tests/projects/mysite's stack in relay mode (part 9)",
}


def dotenv(name: str, default: str = "") -> str:
    """A setting as compose sees it: the environment, else the stack's env file; a secret
    (DEMO_PASSWORD, ...): its file in the stack's secrets directory (scripts/init-env)."""
    if os.environ.get(name):
        return os.environ[name]
    for line in ENV_FILE.read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1] or default
    secret = secrets_dir() / name.lower()
    if secret.is_file():
        return secret.read_text() or default
    return default


def secrets_dir() -> Path:
    """The stack's secrets directory: SECRETS_DIR of its env file (scripts/init-env)."""
    for line in ENV_FILE.read_text().splitlines():
        if line.startswith("SECRETS_DIR=") and line.split("=", 1)[1]:
            return Path(line.split("=", 1)[1])
    return Path(f"{ENV_FILE}.secrets")


def demo_login_form(page: bytes) -> dict[str, str]:
    """The demo's login form as a browser posts it: the demo user, the CSRF token of ``page``."""
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    return {
        "username": dotenv("DEMO_USER", "demo"),
        "password": dotenv("DEMO_PASSWORD"),
        "csrfmiddlewaretoken": token,
        "next": "/",
    }


def parts(*names: str) -> list[pytest.MarkDecorator]:
    """A module's ``pytestmark``: the parts of scripts/test that run it (a typo fails at once)."""
    unknown = [name for name in names if name not in PARTS]
    assert not unknown, f"no part {unknown} in scripts/test: {', '.join(PARTS)}"
    return [getattr(pytest.mark, name) for name in names]


def pytest_configure(config: pytest.Config) -> None:
    for name, what in PARTS.items():
        config.addinivalue_line("markers", f"{name}: {what}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """No module without a part (no part would run it). In pytest's order, except that relay/'s
    modules (rollouts, killed and restarted workers) run after the walking skeleton's, and
    test_zz_down.py (`make down`) last."""
    here = Path(__file__).parent
    mine = [item for item in items if here in item.path.parents]  # hooks see every folder's tests
    unmarked = sorted({str(item.path) for item in mine if not any(map(item.get_closest_marker, PARTS))})
    if unmarked:
        raise pytest.UsageError(
            f"no part of scripts/test runs these modules (pytestmark = parts(...)): {unmarked}"
        )
    items.sort(key=lambda item: (item.path.name == "test_zz_down.py", item.path.parent == here / "relay"))


def http(method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Response:
    """One HTTP request through nginx; errors come back as responses, not exceptions."""
    return fetch(BASE_URL + path, method, body, headers)


def post_json(path: str, payload) -> Response:
    return http("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def ws_connect(room: str, origin: str = ORIGIN, after: int | None = None):
    """A WebSocket to the chat room, through nginx; ``after``: the last message id seen (a
    reconnecting page's ``?after=``)."""
    query = f"?after={after}" if after is not None else ""
    return websockets.connect(f"{WS_URL}/ws/chat/{room}/{query}", origin=origin, open_timeout=10)


async def recv_json(socket, timeout: float = 10.0) -> dict:
    return json.loads(await asyncio.wait_for(socket.recv(), timeout))


def compose(
    *args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`docker compose` on the stack under test (its project name comes from the environment);
    ``env`` adds variables, which win over .env (e.g. ``{"ROUTING": "path"}``)."""
    return subprocess.run(
        ["docker", "compose", *args],
        cwd=REPO,
        check=check,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | env if env else None,
    )


def service_exec(service: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``command`` in one running container of ``service`` (whichever: after a rollout the
    containers are renumbered, and `docker compose exec` looks for number 1)."""
    ids = compose("ps", "--quiet", service).stdout.split()
    assert ids, f"no running container of {service}"
    return subprocess.run(
        ["docker", "exec", ids[0], *command], check=check, capture_output=True, text=True, timeout=120
    )


FINISHED = ("done", "failed")


def wait_for_task(task_id: str, statuses: tuple[str, ...] = FINISHED, timeout: float = 30.0) -> dict:
    """Poll GET /tasks/<id> until its status is one of ``statuses`` (bounded)."""
    deadline = time.monotonic() + timeout
    task = {}
    while time.monotonic() < deadline:
        task = http("GET", f"/tasks/{task_id}").json()
        if task["status"] in statuses:
            return task
        time.sleep(0.2)
    pytest.fail(f"task {task_id} not {' or '.join(statuses)} after {timeout} s: {task}")


def post_task(payload: dict | None = None, channel: str | None = None) -> str:
    """Queue a task (on ``channel``, default the app's: ``thumbnail``); its id."""
    body = dict(payload or {"hello": "world"})
    if channel is not None:
        body["channel"] = channel
    created = post_json("/tasks/", body)
    assert created.status == 202, created.body
    return created.json()["id"]


def run_task(payload: dict | None = None, channel: str | None = None) -> dict:
    """Queue a task and wait until a worker finished it."""
    return wait_for_task(post_task(payload, channel))


def service_hosts(service: str) -> set[str]:
    """Host names of a service's running containers (Docker's default: the short container id)."""
    ids = compose("ps", "--quiet", service).stdout.split()
    return {container_id[:12] for container_id in ids}


def wait_container_healthy(container: str, timeout: float = 60) -> None:
    """Leave the stack as found: ``container`` (restarted by a test) healthy again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inspect = ["docker", "inspect", "--format", "{{.State.Health.Status}}", container]
        if subprocess.run(inspect, capture_output=True, text=True).stdout.strip() == "healthy":
            return
        time.sleep(1)
    pytest.fail(f"{container} not healthy {timeout:g} s after its restart")


def app_containers_started() -> dict[str, str]:
    """Start time of every app container (Daphne, workers): a restarted one shows a new time."""
    ids = compose("ps", "--quiet", "daphne", "worker", "worker-slow").stdout.split()
    inspect = ["docker", "inspect", "--format", "{{.State.StartedAt}}", *ids]
    times = subprocess.run(inspect, check=True, capture_output=True, text=True).stdout.split()
    return dict(zip(ids, times, strict=True))


def wait_for(condition, timeout: float, what: str):
    """``condition()``'s first true value, looked for every half second; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout:g} s")


PLACEMENT = """
import asyncio, json, sys
from channels_kit.conf import channel_layer_from_env
layer = channel_layer_from_env()

async def placement(room):
    group = layer.consistent_hash("chat." + room)
    members = await layer.connection(group).zrange(layer._group_key("chat." + room), 0, -1)
    processes = {m.decode().split("!")[0]: layer.consistent_hash(m.decode()) for m in members}
    return room, {"group": group, "members": len(members), "inboxes": processes}

async def main():
    found = dict(await asyncio.gather(*(placement(room) for room in sys.argv[1:])))
    await layer.close_pools()
    print(json.dumps(found))

asyncio.run(main())
"""


def placement(rooms: list[str]) -> dict[str, dict]:
    """Where the stack's layer keeps each room: its group's shard (0: redis-1, 1: redis-2), its
    member channels' count, and the inbox shard of each interface process holding members
    (its channels' common part: a Daphne's in direct mode, a relay's in relay mode)."""
    found = service_exec("worker", "python", "-c", PLACEMENT, *rooms).stdout.strip().splitlines()[-1]
    return json.loads(found)
