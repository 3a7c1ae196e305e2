"""Traffic splitting (ROUTING): in each of the five modes every kind of request lands on
the tier the mode promises, WebSocket chat and long-poll work, and a login made on a
uWSGI page holds on the WebSocket when both share a host.

The uwsgi service (profile `wsgi`) starts once for the module; each mode is nginx
recreated with ROUTING set, as `ROUTING=<mode> make up` leaves it. The module ends by
removing uWSGI and recreating nginx in `asgi` mode, which must start without it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import websockets

from conftest import BASE_URL, ORIGIN, Response, compose, demo_login_form, dotenv, http, parts, recv_json

pytestmark = parts("direct")

ADDRESS = urllib.parse.urlsplit(BASE_URL)
DAPHNE, UWSGI = "daphne/", "uwsgi/"
SPOOFED = "203.0.113.9"  # a client's own X-Forwarded-For must not become its address
WSGI = ("--profile", "wsgi")
SCALE_UWSGI = (*WSGI, "up", "--detach", "--no-deps", "--no-recreate", "--scale")


@dataclass(frozen=True)
class Mode:
    """What a routing mode promises, as the table of docs/routing.md says."""

    name: str
    page: str  # tier of the chat page on the main host
    login: str  # tier of /accounts/login/ on the main host
    socket_host: str | None = None  # Host of WebSockets and long-poll (None: the main host)
    settings: dict[str, str] = field(default_factory=dict)  # nginx settings besides ROUTING
    routes: tuple[tuple[str | None, str, str], ...] = ()  # more (host, path, tier) promises
    shares_login: bool = True  # the socket's host gets the main host's session cookie


MODES = [
    Mode("asgi", page=DAPHNE, login=DAPHNE),
    # A socket path without `Upgrade: websocket` is an ordinary request: uWSGI's.
    Mode("upgrade", page=UWSGI, login=UWSGI, routes=((None, "/ws/chat/plain/", UWSGI),)),
    Mode(
        "domain",
        page=UWSGI,
        login=UWSGI,
        socket_host="ws.localhost",
        routes=(("ws.localhost", "/?room=r", DAPHNE), ("ws.localhost", "/accounts/login/", DAPHNE)),
        shares_login=False,
    ),
    Mode(
        "inverted",
        page=DAPHNE,
        login=UWSGI,
        settings={"WSGI_DOMAIN": "legacy.localhost"},
        routes=(("legacy.localhost", "/?room=r", UWSGI), (None, "/admin/", UWSGI)),
    ),
    # The prefix decides, not the header: a plain GET under /ws/ still goes to Daphne.
    Mode("path", page=UWSGI, login=UWSGI, routes=((None, "/ws/chat/plain/", DAPHNE),)),
]
BY_NAME = {mode.name: mode for mode in MODES}


def request(path: str, host: str | None = None, headers: dict | None = None) -> Response:
    """GET through nginx, with ``Host: <host>:<port>`` when a host is given."""
    headers = dict(headers or {})
    if host:
        headers["Host"] = f"{host}:{ADDRESS.port}"
    return http("GET", path, headers=headers)


def tier(response: Response) -> str:
    return response.headers.get("X-Served-By", "")


def container_ids(service: str) -> list[str]:
    return compose(*WSGI, "ps", "--quiet", service).stdout.split()


def container_ips(service: str) -> list[str]:
    ids = container_ids(service)
    inspect = subprocess.run(
        ["docker", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", *ids],
        check=True,
        capture_output=True,
        text=True,
    )
    return inspect.stdout.split()


current_mode: list[str] = []


def use_routing(mode: Mode) -> None:
    """Recreate nginx with ROUTING=<mode> and wait until it answers in that mode."""
    if current_mode == [mode.name]:
        return
    current_mode[:] = []
    compose("up", "--detach", "--no-deps", "nginx", env={"ROUTING": mode.name, **mode.settings}, timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if http("GET", "/nginx-health").body.decode().strip() == f"ok routing={mode.name}":
                current_mode[:] = [mode.name]
                return
        except OSError:  # the new container is not listening yet
            pass
        time.sleep(0.2)
    logs = compose("logs", "--no-color", "--tail=30", "nginx").stdout
    pytest.fail(f"nginx did not come up with ROUTING={mode.name}:\n{logs}")


@pytest.fixture(scope="module")
def wsgi_tier():
    """uWSGI running for the module; afterwards gone, and nginx back in `asgi` mode without it."""
    compose(*WSGI, "up", "--detach", "--no-deps", "--wait", "uwsgi", timeout=240)
    yield
    compose(*WSGI, "rm", "--stop", "--force", "uwsgi", timeout=120)
    use_routing(BY_NAME["asgi"])
    assert request("/").headers["X-Served-By"].startswith(DAPHNE)


def ws_connect(room: str, host: str | None = None, cookie: str | None = None):
    """A chat WebSocket through nginx, to ``host`` (the Host header) on the test stack's address."""
    authority = f"{host or ADDRESS.hostname}:{ADDRESS.port}"
    return websockets.connect(
        f"ws://{authority}/ws/chat/{room}/",
        origin=ORIGIN,
        open_timeout=10,
        proxy=None,
        additional_headers={"Cookie": cookie} if cookie else None,
        host=ADDRESS.hostname,
        port=ADDRESS.port,
    )


async def chat_and_long_poll(room: str, host: str | None) -> tuple[dict, list[str], Response]:
    """Open a socket, then talk until a concurrent long-poll returns: (hello, sent, poll answer)."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool:
        poll = loop.run_in_executor(pool, request, f"/poll/{room}/?timeout=15", host)
        async with ws_connect(room, host) as socket_:
            hello = await recv_json(socket_)
            sent: list[str] = []
            # The poll joins the room's group at some point after the request: keep talking.
            for n in range(40):
                sent.append(f"message {n}")
                await socket_.send(json.dumps({"message": sent[-1]}))
                echo = await recv_json(socket_)
                assert echo["type"] == "message" and echo["message"] == sent[-1], echo
                done, _ = await asyncio.wait({poll}, timeout=0.25)
                if done:
                    break
            answer = await poll
    return hello, sent, answer


async def hello_frame(room: str, host: str | None = None, cookie: str | None = None) -> dict:
    async with ws_connect(room, host, cookie) as socket_:
        return await recv_json(socket_)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _open(path: str, data: bytes | None = None, cookie: str | None = None):
    """(status, headers, body) without following redirects, so Set-Cookie headers stay visible."""
    opener = urllib.request.build_opener(_NoRedirect)
    headers = {"Cookie": cookie} if cookie else {}
    try:
        with opener.open(urllib.request.Request(BASE_URL + path, data, headers), timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def _cookies(headers) -> dict[str, str]:
    """Every Set-Cookie of a response, name -> the whole header."""
    return {value.split("=", 1)[0]: value for value in headers.get_all("Set-Cookie") or []}


def log_in() -> tuple[str, dict[str, str], str]:
    """Sign in as the demo user on the main host: (Cookie header, Set-Cookie headers, tier)."""
    status, headers, body = _open("/accounts/login/")
    assert status == 200, body[:300]
    csrf_cookie = _cookies(headers)["csrftoken"].split(";")[0]
    form = demo_login_form(body)
    status, headers, body = _open("/accounts/login/", urllib.parse.urlencode(form).encode(), csrf_cookie)
    assert status == 302, f"login failed ({status}): {body[:300]!r}"
    set_cookies = _cookies(headers)
    session = set_cookies["sessionid"].split(";")[0]
    return session, set_cookies, headers.get("X-Served-By", "")


def whoami(host: str | None = None, cookie: str | None = None) -> dict:
    headers = {"X-Forwarded-For": SPOOFED} | ({"Cookie": cookie} if cookie else {})
    response = request("/whoami", host, headers)
    assert response.status == 200, response.body
    return response.json() | {"tier": tier(response)}


def test_long_poll_leaves_its_group_on_timeout_and_on_disconnect():
    """204 after ?timeout=, and the room's group is empty again whether the wait timed out or
    the client went away (the group key lives on one of the Redis shards)."""
    shards = [url.split("//")[1].split(":")[0] for url in dotenv("REDIS_URLS").split(",")]

    def members(room: str) -> int:
        return sum(
            int(compose("exec", "-T", shard, "redis-cli", "zcard", f"asgi:group:chat.{room}").stdout or 0)
            for shard in shards
        )

    def wait_for_members(room: str, count: int) -> None:
        deadline = time.monotonic() + 10
        while members(room) != count:
            assert time.monotonic() < deadline, f"group of {room} never had {count} member(s)"
            time.sleep(0.2)

    room = f"poll-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        waiting = pool.submit(request, f"/poll/{room}/?timeout=3")
        wait_for_members(room, 1)
        answer = waiting.result(timeout=15)
    assert answer.status == 204 and tier(answer).startswith(DAPHNE)
    assert 2.5 < time.monotonic() - started < 10
    wait_for_members(room, 0)

    room = f"poll-{uuid.uuid4().hex[:8]}"
    with socket.create_connection((ADDRESS.hostname, ADDRESS.port), timeout=10) as client:
        client.sendall(f"GET /poll/{room}/?timeout=30 HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        wait_for_members(room, 1)
    wait_for_members(room, 0)  # Django cancelled the view when nginx dropped Daphne's connection


@pytest.mark.parametrize("mode", MODES, ids=[mode.name for mode in MODES])
def test_routing_mode(mode: Mode, wsgi_tier):
    """In this mode: page, extra routes, static files, proxy headers, WebSocket, long-poll and
    the login each land where the mode promises, and chat and long-poll work."""
    use_routing(mode)
    room = f"route-{mode.name}-{uuid.uuid4().hex[:6]}"

    page = request(f"/?room={room}")
    assert page.status == 200 and tier(page).startswith(mode.page), (page.status, page.headers)
    for host, path, expected in mode.routes:
        response = request(path, host)
        assert tier(response).startswith(expected), (host, path, response.status, response.headers)
    for host in {None, mode.socket_host}:  # static files: nginx itself, on every host
        static = request("/static/chat/chat.js", host)
        assert static.status == 200 and b"new WebSocket" in static.body
        assert "X-Served-By" not in static.headers

    # The client's address and scheme as nginx saw them, on each tier; a forged
    # X-Forwarded-For from the client does not get through.
    nginx_ips = container_ips("nginx")
    seen = [whoami(host) for host in {None} | {host for host, _, _ in mode.routes}]
    for answer in seen:
        assert answer["client"] not in (SPOOFED, *nginx_ips) and answer["scheme"] == "http", answer
    assert len({answer["client"] for answer in seen}) == 1, seen  # Daphne and uWSGI agree

    hello, sent, poll = asyncio.run(chat_and_long_poll(room, mode.socket_host))
    assert hello["type"] == "hello" and hello["server"].startswith(DAPHNE) and hello["user"] is None
    assert poll.status == 200 and tier(poll).startswith(DAPHNE), (poll.status, poll.headers)
    event = poll.json()
    assert event["type"] == "message" and event["room"] == room and event["message"] in sent, event

    session, set_cookies, login_tier = log_in()
    assert login_tier.startswith(mode.login)
    assert whoami(cookie=session)["user"] == dotenv("DEMO_USER", "demo")  # the page tier's session
    if mode.shares_login:
        hello = asyncio.run(hello_frame(room, mode.socket_host, cookie=session))
        assert hello["server"].startswith(DAPHNE) and hello["user"] == dotenv("DEMO_USER", "demo"), hello
    else:
        # Host-only cookie: a browser never sends it to the socket domain (docs/routing.md).
        assert "domain=" not in set_cookies["sessionid"].lower(), set_cookies
        with pytest.raises(websockets.InvalidStatus):  # and the main host has no socket endpoint
            asyncio.run(hello_frame(room))


def test_nginx_follows_uwsgi_replicas(wsgi_tier):
    """The upstream watcher adds a new uWSGI replica to nginx, as it does for Daphne."""
    use_routing(BY_NAME["path"])
    try:
        compose(*SCALE_UWSGI, "uwsgi=2", "--wait", "uwsgi", timeout=240)
        hosts = {f"{UWSGI}{container_id[:12]}" for container_id in container_ids("uwsgi")}
        assert len(hosts) == 2, hosts
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while seen != hosts and time.monotonic() < deadline:
            seen.add(tier(request("/healthz")))
            time.sleep(0.1)
        assert seen == hosts
    finally:
        compose(*SCALE_UWSGI, "uwsgi=1", "uwsgi", timeout=120)


def test_uwsgi_stop_lets_requests_in_flight_finish(wsgi_tier):
    """`docker compose stop` (SIGTERM, hooked to uWSGI's graceful shutdown): a request in
    flight gets its answer, then uWSGI exits 0."""
    (address,) = container_ips("uwsgi")
    # A 3-second request, sent straight to uWSGI's HTTP socket.
    url = f"http://{address}:8000/poll/stop-test/?timeout=3"
    slow = urllib.request.Request(url, headers={"Host": "localhost"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(lambda: opener.open(slow, timeout=20))
        time.sleep(1)
        stopping = time.monotonic()
        compose(*WSGI, "stop", "uwsgi", timeout=60)
        response = answer.result(timeout=20)
    assert time.monotonic() - stopping > 1  # stop waited for the request
    assert response.status == 204 and response.headers["X-Served-By"].startswith(UWSGI)
    states = compose(*WSGI, "ps", "--all", "--format", "json", "uwsgi").stdout.splitlines()
    assert [json.loads(line)["ExitCode"] for line in states if line.strip()] == [0]
    assert "graceful shutdown triggered" in compose(*WSGI, "logs", "--no-color", "uwsgi").stdout
