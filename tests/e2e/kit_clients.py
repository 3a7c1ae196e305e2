"""The clients the end-to-end tests share (tests/native and tests/swarm put this folder on
sys.path): one HTTP request, errors as responses rather than exceptions; a chat room member."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import websockets


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def fetch(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None, timeout: float = 30
) -> Response:
    """One HTTP request; an error status comes back as a Response, not an exception."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Response(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read())


class ChatMember:
    """One WebSocket member of a demo chat room: once ``start`` is set it posts every
    ``every`` seconds (a random pause in that range) while ``posting()`` holds, hands each
    message frame to ``record()``, and counts the closes it saw. Subclasses keep what they need
    of the frames."""

    tag = "m"  # the first letter of its posts: `<tag><number>-<count>`

    def __init__(self, number: int, room: str, ws_url: str, every: tuple[float, float]) -> None:
        self.number, self.room, self.ws_url, self.every = number, room, ws_url, every
        self.sent: dict[str, float] = {}  # text -> when it was sent
        self.closes = 0
        self.hello: dict = {}  # the hello frame: who serves the socket
        self.hello_frames = 0  # one per run of the connect handler

    def record(self, event: dict) -> None:
        raise NotImplementedError

    async def run(self, start: asyncio.Event, posting: Callable[[], bool], done: asyncio.Event) -> None:
        url = f"{self.ws_url}/ws/chat/{self.room}/"
        async with websockets.connect(url, origin="http://localhost", open_timeout=60) as socket:
            self.hello = json.loads(await socket.recv())
            assert self.hello["type"] == "hello", self.hello
            self.hello_frames = 1
            reader = asyncio.ensure_future(self._read(socket))
            await start.wait()
            while posting():
                await asyncio.sleep(random.uniform(*self.every))
                if not posting():
                    break
                text = f"{self.tag}{self.number}-{len(self.sent)}"
                self.sent[text] = time.monotonic()
                await socket.send(json.dumps({"message": text}))
            await done.wait()
            reader.cancel()
            if socket.close_code is not None:
                self.closes += 1

    async def _read(self, socket) -> None:
        try:
            async for frame in socket:
                event = json.loads(frame)
                if event.get("type") == "message":
                    self.record(event)
                elif event.get("type") == "hello":
                    self.hello_frames += 1
        except websockets.ConnectionClosed:
            self.closes += 1
