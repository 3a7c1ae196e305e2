"""The server side of a relay interface, played by queues: what Daphne would put into the
application's ``receive`` and collect from its ``send`` (for tests)."""

from __future__ import annotations

import asyncio
import json

from channels_kit.relay.interface import RelayApplication


def http_scope(path_: str, method: str = "GET") -> dict:
    target, _, query = path_.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"x-test", b"yes")],
        "client": ("10.1.2.3", 40000),
        "server": ("10.1.2.4", 8000),
    }


async def http_request(
    app, path_: str, body: bytes = b"", method: str = "GET", leave_after: float | None = None
):
    """One request through the relay: (status, headers dict, body)."""
    inbound: asyncio.Queue = asyncio.Queue()
    inbound.put_nowait({"type": "http.request", "body": body, "more_body": False})
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    if leave_after is not None:
        asyncio.get_running_loop().call_later(leave_after, inbound.put_nowait, {"type": "http.disconnect"})
    await app(http_scope(path_, method), inbound.get, send)
    if not sent:
        return None, {}, b""
    start = sent[0]
    headers = {bytes(k).decode(): bytes(v).decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


class Socket:
    """A WebSocket client as the relay application sees it through Daphne."""

    def __init__(self, app: RelayApplication, room: str) -> None:
        self.inbound: asyncio.Queue = asyncio.Queue()
        self.outbound: asyncio.Queue = asyncio.Queue()
        scope = http_scope(f"/ws/{room}/") | {"type": "websocket", "scheme": "ws", "subprotocols": []}
        self.inbound.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.ensure_future(app(scope, self.inbound.get, self.outbound.put))

    async def next(self, timeout: float = 5.0) -> dict:
        return await asyncio.wait_for(self.outbound.get(), timeout)

    async def json(self, timeout: float = 5.0) -> dict:
        message = await self.next(timeout)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def opened(self) -> dict:
        """Wait for the accept; return the hello frame."""
        assert (await self.next())["type"] == "websocket.accept"
        return await self.json()

    def send(self, content: dict) -> None:
        self.inbound.put_nowait({"type": "websocket.receive", "text": json.dumps(content)})

    async def leave(self) -> None:
        self.inbound.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, 5)
