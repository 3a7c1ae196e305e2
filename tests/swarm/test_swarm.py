"""The stack on Docker Swarm across three nodes (deploy/swarm/nodes: Docker-in-Docker
nodes on this machine), relay mode, three Redis shards one per node, three Daphnes one per
node: the project's static files served by every node's nginx, groups across nodes, a
rolling worker update under chat load (static files published again first), a failing
image rolled back by Swarm, and a node lost. In order: each test leaves the swarm as the next
one expects it. The figures go to the terminal (scripts/test shows them).

Environment: ENV_FILE (the test stack's settings: images, secrets), SWARM_TEST_KEEP=1
leaves the nodes running afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

REPO = Path(__file__).resolve().parents[2]
STACK = "channels-kit-test"
PORT = 18080
NODES = ("node-1", "node-2", "node-3")
LOST_NODE = "node-3"  # a worker node holding a Redis shard, a Daphne, workers and an nginx
# What every command gets: the stack's own copy of the settings (the fixture makes it).
SETTINGS: dict[str, str] = {}


def node_socket(node: str) -> str:
    return f"unix://{os.environ.get('SWARM_NODES_DIR', '/tmp/channels-kit-swarm')}/{node}/docker.sock"


def run(*command: str, node: str | None = "node-1", timeout: float = 600, check: bool = True, **env: str):
    """A command with the docker CLI pointed at ``node`` (default: the manager; None: this host).
    With ``check``, a failure shows the command's output."""
    if node is not None:
        env["DOCKER_HOST"] = node_socket(node)
    result = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "SWARM_STACK": STACK, **SETTINGS, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert not check or result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result


def docker(*args: str, node: str = "node-1", check: bool = True) -> str:
    return run("docker", *args, node=node, check=check).stdout


def app_repository() -> str:
    """The project's image without its tag, as the workers run it (channels-kit/app for the
    demo, channels-kit/app-<name> for another project)."""
    return running_tasks("worker")[0][1].split("@")[0].rsplit(":", 1)[0]


def completed_tasks(service: str, image: str) -> list[str]:
    """The nodes where a task of the job ``service`` ran ``image`` (repository:tag) to completion."""
    out = docker("service", "ps", "--format", "{{.Node}} {{.Image}} {{.CurrentState}}", f"{STACK}_{service}")
    return sorted(
        line.split()[0]
        for line in out.splitlines()
        if line.split()[1].split("@")[0] == image and " Complete " in f" {line} "
    )


def static_file(address: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` from one node's nginx: (status, body)."""
    request = urllib.request.Request(f"http://{address}:{PORT}{path}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def running_tasks(service: str) -> list[tuple[str, str]]:
    """(node, image) of each running task of ``service``."""
    out = docker(
        "service",
        "ps",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}} {{.Image}} {{.CurrentState}}",
        f"{STACK}_{service}",
    )
    return [tuple(line.split()[:2]) for line in out.splitlines() if " Running " in f" {line} "]


def daphne_nodes() -> dict[str, str]:
    """Daphne container host name (the ``interface`` of hello frames) -> its node."""
    found = {}
    for node in NODES:
        out = docker(
            "ps",
            "--filter",
            f"label=com.docker.swarm.service.name={STACK}_daphne",
            "--format",
            "{{.ID}}",
            node=node,
            check=False,
        )
        found.update({container[:12]: node for container in out.split()})
    return found


async def until_every_nginx_reaches_every_daphne(addresses: dict[str, str], timeout: float = 60) -> None:
    """Wait until each node's nginx has listed the three Daphnes (it re-reads the DNS every few
    seconds: right after swarm-up, the ones that started last may be missing)."""
    seen: dict[str, set[str]] = {node: set() for node in addresses}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node, address in addresses.items():
            for _ in range(6):
                url, origin = f"ws://{address}:{PORT}/ws/chat/swarm-probe/", f"http://{address}:{PORT}"
                async with websockets.connect(url, origin=origin, open_timeout=20) as socket:
                    seen[node].add(json.loads(await asyncio.wait_for(socket.recv(), 20))["interface"])
        if all(len(interfaces) == len(NODES) for interfaces in seen.values()):
            return
        await asyncio.sleep(1)
    raise AssertionError(f"the nginx of each node should reach {len(NODES)} Daphnes: {seen}")


class Member:
    """One chat member's WebSocket through one node's nginx: posts now and then, records
    what it receives and when, reconnects when its socket closes."""

    def __init__(self, number: int, room: str, node_address: str) -> None:
        self.number, self.room = number, room
        self.url = f"ws://{node_address}:{PORT}/ws/chat/{room}/"
        self.origin = f"http://{node_address}:{PORT}"
        self.sent: dict[str, float] = {}  # text -> when it was sent
        self.received: dict[str, float] = {}  # text -> when it first arrived
        self.interfaces: list[str] = []  # the Daphne of each connection, in order
        self.closed_at: list[float] = []
        self.close_codes: list[str] = []  # each close's code and reason, or the connect's error
        self.opened_at: list[float] = []
        self.on_lost_node = False

    async def run(self, posting: asyncio.Event, stop: asyncio.Event, every: tuple[float, float]) -> None:
        while not stop.is_set():
            try:
                async with websockets.connect(self.url, origin=self.origin, open_timeout=20) as socket:
                    hello = await asyncio.wait_for(self._hello(socket), 20)
                    self.interfaces.append(hello["interface"].split("/", 1)[1])
                    self.opened_at.append(time.monotonic())
                    reader = asyncio.ensure_future(self._read(socket))
                    while not stop.is_set() and not reader.done():
                        await asyncio.wait([reader], timeout=random.uniform(*every))
                        if posting.is_set() and not stop.is_set() and not reader.done():
                            text = f"m{self.number}-{len(self.sent)}"
                            await socket.send(json.dumps({"message": text}))
                            self.sent[text] = time.monotonic()
                    if stop.is_set():
                        reader.cancel()
                        return
                self.close_codes.append(f"{socket.close_code} {socket.close_reason or ''}".strip())
            except websockets.ConnectionClosed as error:
                self.close_codes.append(f"{error.rcvd.code if error.rcvd else None} before the hello")
            except (TimeoutError, OSError, websockets.WebSocketException) as error:
                self.close_codes.append(type(error).__name__)
            self.closed_at.append(time.monotonic())
            await asyncio.sleep(0.5)

    async def _hello(self, socket) -> dict:
        """The hello frame. The room's messages may come first: the consumer joins the room
        before it accepts (a post made meanwhile reaches the socket before its hello)."""
        while True:
            event = json.loads(await socket.recv())
            if event.get("type") == "hello":
                return event
            self._record(event)

    async def _read(self, socket) -> None:
        try:
            async for frame in socket:
                self._record(json.loads(frame))
        except websockets.ConnectionClosed:
            pass

    def _record(self, event: dict) -> None:
        if event.get("type") == "message":
            self.received.setdefault(event["message"], time.monotonic())


async def start(
    members: list[Member], posting: asyncio.Event, stop: asyncio.Event, every: tuple[float, float]
) -> list[asyncio.Future]:
    """Connect the members a few milliseconds apart, as people arrive; each posts every
    ``every`` seconds (a random pause in that range) while ``posting`` is set."""
    tasks = []
    for member in members:
        tasks.append(asyncio.ensure_future(member.run(posting, stop, every)))
        await asyncio.sleep(0.03)
    return tasks


def posts_of(members: list[Member], room: str, since: float = 0.0, until: float = float("inf")) -> set[str]:
    """The posts sent to ``room`` (between ``since`` and ``until``)."""
    return {
        text
        for member in members
        if member.room == room
        for text, sent in member.sent.items()
        if since <= sent < until
    }


async def until_delivered(members: list[Member], timeout: float, since: float = 0.0) -> None:
    """Wait until every member has every post of its room sent since ``since`` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(posts_of(members, m.room, since) <= set(m.received) for m in members):
            return
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def addresses(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Three nodes, the stack deployed on them: node -> address. The settings are a copy of
    ENV_FILE's (images, secrets): swarm-up and swarm-deploy write to theirs."""
    env_file = tmp_path_factory.mktemp("swarm") / ".env"
    settings = Path(os.environ.get("ENV_FILE", REPO / ".env")).read_text()
    # The project's image as the kit builds it (KIT_TAG), whatever tag a rollout test recorded.
    env_file.write_text(re.sub(r"(?m)^APP_TAG=.*$", "APP_TAG=", settings))
    env_file.chmod(0o600)
    SETTINGS["ENV_FILE"] = str(env_file)
    run("deploy/swarm/nodes", "down", node=None, check=False)
    try:
        run("deploy/swarm/nodes", "up", "3", node=None)
        found = dict(
            line.split() for line in run("deploy/swarm/nodes", "addresses", node=None).stdout.splitlines()
        )
        deploy = run(
            "deploy/swarm/up",
            check=False,
            ASGI_MODE="relay",
            CHANNEL_BACKEND="redis",
            ROUTING="asgi",
            REDIS_SHARDS="3",
            DAPHNE_REPLICAS="3",
            WORKER_REPLICAS="3",
            HTTP_PORT=str(PORT),
            DJANGO_ALLOWED_HOSTS=",".join(found.values()),
            # The compose default (30 s), not the 2 s of the compose end-to-end tests: a lost
            # host's silent connections are noticed by REDIS_COMMAND_TIMEOUT, not this.
            REDIS_SOCKET_TIMEOUT="",
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        asyncio.run(until_every_nginx_reaches_every_daphne(found))
        yield found
    finally:
        if os.environ.get("SWARM_TEST_KEEP") != "1":
            run("deploy/swarm/nodes", "down", node=None, check=False)


def test_stack_spreads_over_the_nodes(addresses):
    shards = {service: running_tasks(service) for service in ("redis-1", "redis-2", "redis-3")}
    assert sorted(node for tasks in shards.values() for node, _ in tasks) == list(NODES), shards
    assert sorted(node for node, _ in running_tasks("daphne")) == list(NODES)
    assert sorted(node for node, _ in running_tasks("nginx")) == list(NODES)
    workers = running_tasks("worker")
    assert len(workers) == 3 and len({node for node, _ in workers}) >= 2, workers
    # Nothing secret in any service's spec: the secrets are Docker secrets.
    spec = docker("service", "inspect", f"{STACK}_worker", f"{STACK}_daphne", f"{STACK}_redis-1")
    for variable in ("DJANGO_SECRET_KEY=", "POSTGRES_PASSWORD=", "REDIS_PASSWORD="):
        assert variable not in spec
    assert "REDIS_PASSWORD_FILE=/run/secrets/redis_worker_password" in spec


# A static file of the demo (its chat app's), which only the app image holds: nginx's
# image has none, every node's static-files volume gets it from the static job.
STATIC_PATH = "/static/chat/chat.css"
STATIC_SOURCE = REPO / "app" / "demo" / "chat" / "static" / "chat" / "chat.css"


def test_every_nodes_nginx_serves_the_projects_static_files(addresses):
    # The static job ran on every node, with the image the workers run.
    image = running_tasks("worker")[0][1].split("@")[0]
    assert completed_tasks("static", image) == list(NODES), docker("service", "ps", f"{STACK}_static")
    # The migrations job publishes nothing in Swarm (it runs on one node only).
    migrate = json.loads(docker("service", "inspect", f"{STACK}_migrate"))[0]
    container = migrate["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert "STATIC_PUBLISH_DIR=" in container["Env"]
    assert all(mount["Target"] != "/srv/static" for mount in container.get("Mounts", []))
    for node, address in addresses.items():
        status, body = static_file(address, STATIC_PATH)
        assert (status, body) == (200, STATIC_SOURCE.read_bytes()), (node, status, body[:200])
        assert static_file(address, "/static/chat/no-such-file.css")[0] == 404, node


def test_a_room_spans_daphnes_on_every_node(addresses, capsys):
    room = f"swarm-{uuid.uuid4().hex[:6]}"
    members = [Member(n, room, addresses[NODES[n % 3]]) for n in range(30)]

    async def scenario() -> None:
        posting, stop = asyncio.Event(), asyncio.Event()
        tasks = await start(members, posting, stop, (0.5, 1.5))
        await asyncio.sleep(5)
        posting.set()
        await asyncio.sleep(4)
        posting.clear()
        await until_delivered(members, 30)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    held_by = daphne_nodes()
    nodes = {held_by.get(m.interfaces[0]) for m in members if m.interfaces}
    posts = posts_of(members, room)
    missing = sum(len(posts - set(m.received)) for m in members)
    with capsys.disabled():
        print(
            f"\nswarm: one room, 30 sockets on Daphnes of {sorted(nodes)}: "
            f"{len(posts)} posts, {missing} missing"
        )
    assert nodes == set(NODES)
    assert len(posts) >= 30 and missing == 0
    assert all(not m.closed_at for m in members)


def test_rolling_worker_update_under_load_drops_nothing(addresses, capsys):
    tag = "swarm-v2"
    current = running_tasks("worker")[0][1].split("@")[0]
    repository = app_repository()
    for node in NODES:  # the new release reaches every node (as a registry would bring it)
        docker("tag", current, f"{repository}:{tag}", node=node)
    rooms = [f"swarm-roll-{n}-{uuid.uuid4().hex[:6]}" for n in range(4)]
    members = [Member(n, rooms[n % 4], addresses[NODES[n % 3]]) for n in range(120)]
    started = time.monotonic()

    async def scenario() -> subprocess.CompletedProcess:
        posting, stop = asyncio.Event(), asyncio.Event()
        tasks = await start(members, posting, stop, (5.0, 9.0))
        await asyncio.sleep(3)
        posting.set()
        await asyncio.sleep(3)
        result = await asyncio.to_thread(run, "deploy/swarm/deploy", "--tag", tag, check=False)
        await asyncio.sleep(3)
        posting.clear()
        await until_delivered(members, 60)
        stop.set()
        await asyncio.gather(*tasks)
        return result

    result = asyncio.run(scenario())
    assert result.returncode == 0, result.stdout + result.stderr
    expected = sum(len(posts_of(members, m.room)) for m in members)
    delivered = sum(len(posts_of(members, m.room) & set(m.received)) for m in members)
    closes = sum(len(m.closed_at) for m in members)
    workers = running_tasks("worker") + running_tasks("worker-slow")
    with capsys.disabled():
        print(
            f"\nswarm rolling update to {tag}: 120 sockets over 3 nodes, {sum(len(m.sent) for m in members)} "
            f"posts, {delivered}/{expected} deliveries, {closes} closes, {time.monotonic() - started:.0f} s"
        )
    assert {image.split("@")[0] for _, image in workers} == {f"{repository}:{tag}"}, workers
    assert len(workers) == 4
    assert closes == 0
    assert expected > 120 * 10 and delivered == expected
    # swarm-deploy published the new image's static files again, on every node.
    published = completed_tasks("static", f"{repository}:{tag}")
    assert published == list(NODES), docker("service", "ps", f"{STACK}_static")
    for node, address in addresses.items():
        assert static_file(address, STATIC_PATH)[0] == 200, node


def test_a_failing_image_rolls_back_by_itself(addresses, capsys):
    broken = "swarm-broken"
    repository = app_repository()
    # A release whose workers never become healthy (its healthcheck always fails).
    dockerfile = (
        f"FROM {repository}:swarm-v2\nUSER root\n"
        "RUN printf '#!/bin/sh\\nexit 1\\n' > /usr/local/bin/kit-healthcheck\nUSER app\n"
    )
    for node in NODES:
        subprocess.run(
            ["docker", "build", "-q", "-t", f"{repository}:{broken}", "-"],
            input=dockerfile,
            env={**os.environ, "DOCKER_HOST": node_socket(node), "DOCKER_BUILDKIT": "0"},
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
    started = time.monotonic()
    result = run("deploy/swarm/deploy", "--tag", broken, "--services", "worker", check=False)
    took = time.monotonic() - started
    state = docker("service", "inspect", "-f", "{{.UpdateStatus.State}}", f"{STACK}_worker").strip()
    with capsys.disabled():
        print(f"\nswarm deploy of a failing image: exit {result.returncode}, {state} after {took:.0f} s")
    assert result.returncode == 3, result.stdout + result.stderr
    assert state == "rollback_completed"
    deadline = time.monotonic() + 60
    while len(running_tasks("worker")) < 3 and time.monotonic() < deadline:
        time.sleep(1)
    assert {image.split("@")[0] for _, image in running_tasks("worker")} == {f"{repository}:swarm-v2"}
    assert len(running_tasks("worker")) == 3


# How long members keep posting after the node is killed, and the latest the layer may
# recover by (every post from then on reaching every member connected when it was sent).
POST_AFTER_LOSS_SECONDS = 75.0
RECOVERY_BOUND_SECONDS = 55.0


def test_a_lost_node(addresses, capsys):
    """node-3 is killed (SIGKILL: a host gone, nothing shut down cleanly). Members connect
    through node-1's and node-2's nginx only, as a load balancer would after a health check."""
    rooms = [f"swarm-lost-{n}-{uuid.uuid4().hex[:6]}" for n in range(3)]
    members = [Member(n, rooms[n % 3], addresses[NODES[n % 2]]) for n in range(60)]
    figures: dict[str, float] = {}
    lost_shard = ""

    async def scenario() -> None:
        nonlocal lost_shard
        posting, stop = asyncio.Event(), asyncio.Event()
        tasks = await start(members, posting, stop, (2.0, 4.0))
        await asyncio.sleep(4)
        posting.set()
        await asyncio.sleep(5)
        held_by = await asyncio.to_thread(daphne_nodes)
        for member in members:
            member.on_lost_node = held_by.get(member.interfaces[-1]) == LOST_NODE
        shards = [f"redis-{n}" for n in (1, 2, 3)]
        placed = {name: await asyncio.to_thread(running_tasks, name) for name in shards}
        # The one shard on that node (the stack spreads them: test_stack_spreads_over_the_nodes).
        lost_shard = next(name for name, tasks in placed.items() if tasks and tasks[0][0] == LOST_NODE)
        killed = figures["killed"] = time.monotonic()
        subprocess.run(["docker", "kill", LOST_NODE], check=True, capture_output=True)
        # Swarm's view: the node down, its workers and its shard running elsewhere.
        while time.monotonic() - killed < POST_AFTER_LOSS_SECONDS:
            nodes = await asyncio.to_thread(docker, "node", "ls", "--format", "{{.Hostname}} {{.Status}}")
            if "down" not in figures and f"{LOST_NODE} Down" in nodes:
                figures["down"] = time.monotonic() - killed
            workers = await asyncio.to_thread(running_tasks, "worker")
            shard = await asyncio.to_thread(running_tasks, lost_shard)
            if "workers" not in figures and len(workers) == 3 and LOST_NODE not in {n for n, _ in workers}:
                figures["workers"] = time.monotonic() - killed
            if "shard" not in figures and shard and shard[0][0] != LOST_NODE:
                figures["shard"] = time.monotonic() - killed
            await asyncio.sleep(1)
        posting.clear()
        await until_delivered(members, 30, since=killed + RECOVERY_BOUND_SECONDS)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    killed = figures["killed"]
    survivors = [m for m in members if not m.on_lost_node]
    moved = [m for m in members if m.on_lost_node]
    survivor_closes = sum(len(m.closed_at) for m in survivors)
    reconnect = [m.opened_at[-1] - m.closed_at[0] for m in moved if m.closed_at and len(m.opened_at) > 1]
    recovered = recovery_moment(members, killed) - killed
    # Before the recovery: deliveries to surviving members that never came; their longest silence.
    until = killed + recovered
    missed = sum(len(posts_of(members, m.room, killed, until) - set(m.received)) for m in survivors)
    outage = sum(len(posts_of(members, m.room, killed, until)) for m in survivors)
    gaps = [longest_gap(m, killed, killed + POST_AFTER_LOSS_SECONDS) for m in survivors]
    with capsys.disabled():
        print(
            f"\nswarm node lost ({LOST_NODE} killed): Swarm saw it down after "
            f"{figures.get('down', -1):.0f} s; its workers ran elsewhere after "
            f"{figures.get('workers', -1):.0f} s, its shard {lost_shard} after "
            f"{figures.get('shard', -1):.0f} s; every post delivered again from {recovered:.0f} s on. "
            f"{len(moved)} of 60 sockets were on its Daphne: all reconnected, within "
            f"{max(reconnect, default=0):.1f} s; the other {len(survivors)}: {survivor_closes} closes, "
            f"longest silence {max(gaps, default=0):.1f} s, {missed} of {outage} deliveries before the "
            "recovery missed"
        )
    assert {"down", "workers", "shard"} <= set(figures), figures
    assert moved and len(reconnect) == len(moved)
    codes = Counter(code for m in survivors for code in m.close_codes)
    assert survivor_closes == 0, f"close codes {dict(codes)}\n" + service_warnings("daphne", "worker")
    assert recovered <= RECOVERY_BOUND_SECONDS, (
        missed_report(members, killed + RECOVERY_BOUND_SECONDS) + "\n" + service_warnings("daphne", "worker")
    )


def recovery_moment(members: list[Member], since: float) -> float:
    """The send time of the last post after ``since`` that some member connected when it
    was sent never got (``since`` when there is none): from then on, everything arrived."""
    last = since
    for sender in members:
        for text, sent in sender.sent.items():
            if sent <= since:
                continue
            room = [m for m in members if m.room == sender.room and connected_at(m, sent)]
            if any(text not in m.received for m in room):
                last = max(last, sent)
    return last


def connected_at(member: Member, moment: float) -> bool:
    """Whether the member's socket of ``moment`` was open from before it until the end."""
    return bool(member.opened_at) and member.opened_at[-1] < moment


def longest_gap(member: Member, start: float, end: float) -> float:
    times = sorted(t for t in member.received.values() if start <= t <= end)
    points = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(points))


def service_warnings(*services: str) -> str:
    """The last warnings and errors the services logged (for a failure's message)."""
    lines = []
    for service in services:
        out = run(
            "docker", "service", "logs", "--no-trunc", "--since", "5m", f"{STACK}_{service}", check=False
        )
        lines += [
            line for line in (out.stdout + out.stderr).splitlines() if "WARNING" in line or "ERROR" in line
        ]
    return "\n".join(lines[-80:])


def missed_report(members: list[Member], since: float) -> str:
    """Who missed posts sent after ``since``: each such member's count, Daphnes and closes, and
    whose posts (by the sender's Daphne then, and whether it had moved from the lost node)."""
    lines = []
    for member in members:
        missed = []
        for text in posts_of(members, member.room, since):
            sender = members[int(text[1:].split("-")[0])]
            if text not in member.received and connected_at(member, sender.sent[text]):
                missed.append(f"{sender.interfaces[-1][:4]}{'*' if sender.on_lost_node else ''}")
        if missed:
            senders = ",".join(f"{k}:{v}" for k, v in sorted(Counter(missed).items()))
            lines.append(
                f"m{member.number} ({member.room[-6:]}{'*' if member.on_lost_node else ''}): {len(missed)} "
                f"missed (from {senders}), Daphnes {member.interfaces}, {len(member.closed_at)} closes"
            )
    return "; ".join(lines)
