"""WebSockets for Locust users, on websocket-client (gevent makes its blocking calls cooperative):
a text socket of any project, and the demo's chat socket on it."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import gevent
import websocket
from locust.env import Environment

from .config import SETTINGS
from .metrics import WS_CONNECT, WS_ERROR, fire

CONNECT_TIMEOUT = 10.0
# The reader wakes this often to notice close(); it is not an idle limit.
READ_TICK = 2.0


def ws_base(host: str) -> str:
    """``http://nginx:8080`` -> ``ws://nginx:8080``."""
    if host.startswith("https://"):
        return "wss://" + host[len("https://") :]
    return "ws://" + host.removeprefix("http://")


class ClosedByServer(Exception):
    """The server closed a socket that the scenario still used."""


class TextSocket:
    """One WebSocket; every data frame goes to ``on_text``, and its loss to ``on_lost``, from a reader
    greenlet. A lost socket (broken, or closed by the server) is a WSERROR event."""

    def __init__(
        self,
        environment: Environment,
        on_text: Callable[[str], None],
        on_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self.environment = environment
        self.on_text = on_text
        self.on_lost = on_lost
        self._socket: websocket.WebSocket | None = None
        self._reader: gevent.Greenlet | None = None
        self._closing = False

    @property
    def alive(self) -> bool:
        return self._socket is not None and self._socket.connected and not self._closing

    def open(self, path: str, name: str, host: str, origin: str) -> bool:
        """Open the socket (reported as WSCONNECT ``name``: the handshake's time); False on failure."""
        started = time.time()
        url = ws_base(self.environment.host or "") + path
        try:
            sock = websocket.create_connection(
                url,
                timeout=CONNECT_TIMEOUT,
                origin=origin,
                host=host,
                enable_multithread=True,  # the reader greenlet receives while the user sends
            )
            self._greet(sock)
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            fire(self.environment, WS_CONNECT, name, started, exception=exc)
            return False
        fire(self.environment, WS_CONNECT, name, started)
        sock.settimeout(READ_TICK)
        self._socket = sock
        self._closing = False
        self._reader = gevent.spawn(self._read)
        return True

    def _greet(self, sock: websocket.WebSocket) -> None:
        """What the server must send first, read before the socket counts as connected (nothing here)."""

    def send(self, text: str) -> bool:
        """Send one text frame; False (and a WSERROR event) when the socket is gone."""
        started = time.time()
        if self._socket is None:
            return False
        try:
            self._socket.send(text)
        except (websocket.WebSocketException, OSError) as exc:
            fire(self.environment, WS_ERROR, "send", started, exception=exc)
            self.close()
            return False
        return True

    def close(self) -> None:
        """Close the socket and stop the reader (idempotent)."""
        self._closing = True
        if self._socket is not None:
            with contextlib.suppress(websocket.WebSocketException, OSError):  # already gone
                self._socket.close(timeout=1)
            self._socket = None
        if self._reader is not None and gevent.getcurrent() is not self._reader:
            self._reader.kill(block=False)
        self._reader = None

    def _lost(self, what: str, exc: Exception) -> None:
        """The server closed the socket or the connection broke: a WSERROR, then ``on_lost``."""
        if not self._closing:
            self._closing = True
            fire(self.environment, WS_ERROR, what, time.time(), exception=exc)
            self.on_lost()

    def _read(self) -> None:
        # Ends when the socket closes or close() is called: at most one user's lifetime.
        while not self._closing and self._socket is not None:
            try:
                opcode, data = self._socket.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError) as exc:
                self._lost("connection lost", exc)
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                self._lost("closed by the server", ClosedByServer(f"close code {code}"))
                return
            if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                self.on_text(data if isinstance(data, str) else data.decode("utf-8", "replace"))


class ChatSocket(TextSocket):
    """One socket in the demo's ``/ws/chat/<room>/``: a hello frame first, then JSON frames, each
    to ``on_frame``; an error frame is a WSERROR event."""

    def __init__(self, environment: Environment, room: str, on_frame: Callable[[dict[str, Any]], None]):
        super().__init__(environment, self._on_text)
        self.room = room
        self.on_frame = on_frame
        self.hello: dict[str, Any] = {}

    def connect(self) -> bool:
        """Open the socket and wait for the hello frame (reported as WSCONNECT); False on failure."""
        return self.open(f"/ws/chat/{self.room}/", "/ws/chat/[room]/", SETTINGS.host_header, SETTINGS.origin)

    def _greet(self, sock: websocket.WebSocket) -> None:
        hello = json.loads(sock.recv())
        if hello.get("type") != "hello":
            sock.close()
            raise websocket.WebSocketException(f"first frame is not hello: {hello!r}")
        self.hello = hello

    def send_json(self, payload: dict[str, Any]) -> bool:
        """Send one JSON frame; False (and a WSERROR event) when the socket is gone."""
        return self.send(json.dumps(payload))

    def _on_text(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            return
        if frame.get("type") == "error":
            fire(self.environment, WS_ERROR, "error frame", time.time(), exception=RuntimeError(frame))
            return
        self.on_frame(frame)
