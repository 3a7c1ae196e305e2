"""A chat WebSocket for Locust users, on websocket-client (gevent makes its blocking calls cooperative)."""

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


class ChatSocket:
    """One socket in ``/ws/chat/<room>/``; frames go to ``on_frame`` from a reader greenlet."""

    def __init__(self, environment: Environment, room: str, on_frame: Callable[[dict[str, Any]], None]):
        self.environment = environment
        self.room = room
        self.on_frame = on_frame
        self.hello: dict[str, Any] = {}
        self._socket: websocket.WebSocket | None = None
        self._reader: gevent.Greenlet | None = None
        self._closing = False

    @property
    def alive(self) -> bool:
        return self._socket is not None and self._socket.connected and not self._closing

    def connect(self) -> bool:
        """Open the socket and wait for the hello frame (reported as WSCONNECT); False on failure."""
        started = time.time()
        url = f"{ws_base(self.environment.host or '')}/ws/chat/{self.room}/"
        try:
            sock = websocket.create_connection(
                url,
                timeout=CONNECT_TIMEOUT,
                origin=SETTINGS.origin,
                host=SETTINGS.host_header,
                enable_multithread=True,  # the reader greenlet receives while the user sends
            )
            hello = json.loads(sock.recv())
            if hello.get("type") != "hello":
                sock.close()
                raise websocket.WebSocketException(f"first frame is not hello: {hello!r}")
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            fire(self.environment, WS_CONNECT, "/ws/chat/[room]/", started, exception=exc)
            return False
        fire(self.environment, WS_CONNECT, "/ws/chat/[room]/", started)
        sock.settimeout(READ_TICK)
        self.hello = hello
        self._socket = sock
        self._closing = False
        self._reader = gevent.spawn(self._read)
        return True

    def send_json(self, payload: dict[str, Any]) -> bool:
        """Send one frame; False (and a WSERROR event) when the socket is gone."""
        started = time.time()
        if self._socket is None:
            return False
        try:
            self._socket.send(json.dumps(payload))
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

    def _read(self) -> None:
        # Ends when the socket closes or close() is called: at most one user's lifetime.
        while not self._closing and self._socket is not None:
            try:
                text = self._socket.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError) as exc:
                if not self._closing:
                    fire(self.environment, WS_ERROR, "connection lost", time.time(), exception=exc)
                    self._closing = True
                return
            if not text:
                if self._socket is None or not self._socket.connected:
                    self._closing = True
                    return
                continue
            try:
                frame = json.loads(text)
            except ValueError:
                continue
            if frame.get("type") == "error":
                fire(self.environment, WS_ERROR, "error frame", time.time(), exception=RuntimeError(frame))
                continue
            self.on_frame(frame)
