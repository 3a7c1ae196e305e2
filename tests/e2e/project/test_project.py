"""A project the kit did not write, deployed by `PROJECT_DIR=tests/projects/mysite make up`.

tests/projects/mysite is shaped like the Channels tutorial's project: `startproject`
settings with DEBUG on, SQLite and a Redis at 127.0.0.1:6379, `daphne` in INSTALLED_APPS,
an async and a sync chat consumer sharing a group, a background channel, static files,
its own migrations and a requirements.txt (Django 6 in the image). The kit runs it
unchanged: these tests go through nginx (and to each Daphne replica directly, to hold
members on both), in the mode scripts/test started (KIT_ASGI_MODE).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid

import pytest
import websockets

from conftest import ASGI_APP_ROLE, ASGI_MODE, ORIGIN, REPO, WS_URL, compose, http, parts, post_json, wait_for

pytestmark = [
    *parts("direct", "project_direct", "project_relay"),
    pytest.mark.skipif(os.environ.get("KIT_PROJECT") != "mysite", reason="needs the mysite stack"),
]

PROJECT = REPO / "tests/projects/mysite"


def container_ips(service: str) -> list[str]:
    """The address of each running container of ``service`` on the stack's network."""
    ids = compose("ps", "--quiet", service).stdout.split()
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    return [
        subprocess.check_output(["docker", "inspect", "--format", fmt, i], text=True).strip() for i in ids
    ]


def service_logs(service: str) -> str:
    return compose("logs", "--no-color", service).stdout


async def receive_message(socket, timeout: float = 10.0) -> str:
    return json.loads(await asyncio.wait_for(socket.recv(), timeout))["message"]


def test_the_project_is_unchanged_by_the_kit() -> None:
    """No file of the project was written: none changed, none added (bytecode, a database)."""
    tracked = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", str(PROJECT)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert tracked == "", f"files of the project changed or added:\n{tracked}"


def test_pages_and_static_files_through_nginx() -> None:
    index = http("GET", "/chat/")
    assert index.status == 200, index.body[:300]
    assert b"What chat room would you like to enter?" in index.body
    assert index.headers["X-Served-By"].startswith(ASGI_APP_ROLE)
    room = http("GET", "/chat/lobby/")
    assert room.status == 200 and b'"lobby"' in room.body
    # Collected in the image, published by the release step, served by nginx itself.
    script = http("GET", "/static/chat/room.js")
    assert script.status == 200
    assert script.body == (PROJECT / "chat/static/chat/room.js").read_bytes()
    assert "X-Served-By" not in script.headers
    assert http("GET", "/static/admin/css/base.css").status == 200  # Django's own app's files too


def test_production_settings_replace_the_tutorials() -> None:
    """DEBUG is off (no technical 404 page), the kit's health views are mounted, and every
    process logged what it replaced."""
    missing = http("GET", "/chat/no/such/page/")
    assert missing.status == 404
    assert b"DEBUG = True" not in missing.body and b"URLconf" not in missing.body
    assert http("GET", "/healthz").json()["status"] == "ok"
    ready = http("GET", "/readyz")
    assert ready.status == 200, ready.body
    logs = service_logs("worker")
    assert "replaced DEBUG: True -> False" in logs
    assert "replaced CHANNEL_LAYERS: channels_redis.core.RedisChannelLayer 127.0.0.1:6379 ->" in logs
    assert "replaced DATABASES: sqlite3" in logs and "-> postgresql db:5432" in logs
    assert "django-insecure" not in logs  # the secret key is never printed


def test_group_message_reaches_members_on_both_daphne_replicas() -> None:
    """Members of one room held by each Daphne replica (connected to each directly), async and
    sync consumers alike, all get a message posted through nginx."""
    ips = container_ips("daphne")
    assert len(ips) == 2, ips
    room = f"r{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        members = []
        for ip in ips:
            for path in ("chat", "sync-chat"):
                url = f"ws://{ip}:8000/ws/{path}/{room}/"
                members.append(await websockets.connect(url, origin=ORIGIN, open_timeout=10))
        sender = await websockets.connect(f"{WS_URL}/ws/chat/{room}/", origin=ORIGIN, open_timeout=10)
        try:
            await asyncio.sleep(0.5)  # every member's group_add is done before the post
            for n in range(5):
                text = f"hello {n} {uuid.uuid4().hex[:6]}"
                await sender.send(json.dumps({"message": text}))
                for member in [*members, sender]:
                    assert await receive_message(member) == text
        finally:
            for socket in [*members, sender]:
                await socket.close()

    asyncio.run(scenario())


def nginx_in_routing(mode: str) -> None:
    """Recreate nginx with ROUTING=<mode>, as `ROUTING=<mode> make up` leaves it."""
    compose("up", "--detach", "--no-deps", "nginx", env={"ROUTING": mode}, timeout=120)

    def answers() -> bool:
        try:
            return http("GET", "/nginx-health").body.decode().strip() == f"ok routing={mode}"
        except OSError:
            return False

    wait_for(answers, 60, f"nginx in ROUTING={mode}")


@pytest.mark.skipif(ASGI_MODE != "direct", reason="one mode is enough: nginx and uWSGI are the same")
def test_the_wsgi_tier_runs_the_projects_wsgi_application() -> None:
    """ROUTING=upgrade: the project's pages from uWSGI (its WSGI_APPLICATION), its sockets from
    Daphne, the same group across both."""
    wsgi = ("--profile", "wsgi")
    compose(*wsgi, "up", "--detach", "--no-deps", "--wait", "uwsgi", timeout=240)
    try:
        nginx_in_routing("upgrade")
        page = http("GET", "/chat/lobby/")
        assert page.status == 200 and page.headers["X-Served-By"].startswith("uwsgi/")
        created = post_json("/chat/tasks/", {"number": 3})  # a sync view sends to the layer
        assert created.status == 202 and created.headers["X-Served-By"].startswith("uwsgi/")

        async def chat() -> str:
            url = f"{WS_URL}/ws/chat/wsgi/"
            async with websockets.connect(url, origin=ORIGIN, open_timeout=10) as socket:
                await socket.send(json.dumps({"message": "through daphne"}))
                return await receive_message(socket)

        assert asyncio.run(chat()) == "through daphne"
    finally:
        compose(*wsgi, "rm", "--stop", "--force", "uwsgi", timeout=120)
        nginx_in_routing("asgi")
    assert http("GET", "/chat/").headers["X-Served-By"].startswith("daphne/")


def run_task(number: int, timeout: float = 60) -> dict:
    created = post_json("/chat/tasks/", {"number": number})
    assert created.status == 202, created.body
    task_id = created.json()["id"]

    def done():
        task = http("GET", f"/chat/tasks/{task_id}/").json()
        return task if task["status"] == "done" else None

    return wait_for(done, timeout, f"task {task_id} done by a worker")


def test_background_task_runs_on_a_worker() -> None:
    assert run_task(7)["result"] == 49


def test_scale_workers_to_eight() -> None:
    """`docker compose scale worker=8`: eight healthy workers share the background channel."""
    try:
        compose("up", "--detach", "--no-recreate", "--wait", "--scale", "worker=8", "worker", timeout=300)
        assert len(compose("ps", "--quiet", "worker").stdout.split()) == 8
        results = [run_task(n) for n in range(10)]
        assert [task["result"] for task in results] == [n * n for n in range(10)]
    finally:
        compose("up", "--detach", "--no-recreate", "--wait", "--scale", "worker=1", "worker", timeout=300)


@pytest.mark.skipif(ASGI_MODE != "relay", reason="relay mode keeps every socket through a deploy")
def test_deploy_under_chat_load_drops_no_socket() -> None:
    """`make deploy TAG=...` while 20 sockets chat in 4 rooms: the project's new image rolls
    onto every worker, no socket closes, every post reaches every member of its room."""
    tag = f"e2e-project-{int(time.time())}"
    rooms = [f"d{uuid.uuid4().hex[:6]}" for _ in range(4)]
    stop = asyncio.Event()
    counts = {"posted": 0, "delivered": 0, "closed": 0}

    async def member_loop(room: str, index: int, members: dict) -> None:
        socket = members[(room, index)]
        while not stop.is_set():
            text = f"{room}-{index}-{uuid.uuid4().hex[:8]}"
            await socket.send(json.dumps({"message": text}))
            counts["posted"] += 1
            await asyncio.sleep(1.0)

    async def reader(room: str, index: int, members: dict, seen: dict) -> None:
        socket = members[(room, index)]
        try:
            async for raw in socket:
                seen.setdefault(json.loads(raw)["message"], set()).add((room, index))
        except websockets.ConnectionClosed:
            pass
        if not stop.is_set():
            counts["closed"] += 1

    async def scenario() -> dict:
        members = {}
        for room in rooms:
            for index in range(5):
                members[(room, index)] = await websockets.connect(
                    f"{WS_URL}/ws/chat/{room}/", origin=ORIGIN, open_timeout=10, ping_interval=None
                )
        seen: dict[str, set] = {}
        readers = [asyncio.create_task(reader(r, i, members, seen)) for (r, i) in members]
        posters = [asyncio.create_task(member_loop(r, i, members)) for (r, i) in members]
        rollout = await asyncio.create_subprocess_exec(
            str(REPO / "scripts/rollout"), "--tag", tag, cwd=REPO, env=os.environ | {"APP_TAG": tag}
        )
        assert await asyncio.wait_for(rollout.wait(), 600) == 0
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*posters)
        await asyncio.sleep(3)  # the last posts arrive
        for socket in members.values():
            await socket.close()
        await asyncio.gather(*readers)
        return seen

    seen = asyncio.run(scenario())
    assert counts["closed"] == 0
    assert counts["posted"] > 100
    missing = {text: 5 - len(who) for text, who in seen.items() if len(who) != 5}
    assert len(seen) == counts["posted"] and not missing, (
        f"{len(seen)}/{counts['posted']} posts seen; {missing}"
    )
    images = {
        subprocess.check_output(["docker", "inspect", "--format", "{{.Config.Image}}", i], text=True).strip()
        for i in compose("ps", "--quiet", "worker").stdout.split()
    }
    assert images == {f"channels-kit/app-mysite:{tag}"}
