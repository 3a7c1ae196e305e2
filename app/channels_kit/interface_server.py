"""Daphne as the kit runs it (``python -m channels_kit.interface_server``, Daphne's own options).

Two changes to Daphne's server, for every WebSocket it holds (the project's in direct mode,
the relay's in relay mode; ``manage.py runall`` serves with the same class):

- A WebSocket that Autobahn fails (a message over ``--websocket-max-message-size``, a
  frame over the frame limit, a protocol error) is closed with its close code, 1009
  "message too big" or 1002, instead of a dropped TCP connection that leaves the client
  with 1006 and no reason.
- A socket that sends more than ``WS_MAX_MESSAGES_PER_SECOND`` messages a second (in
  bursts of up to ``WS_MESSAGE_BURST``) is closed with 1008, "policy violation"; what it
  sent over the limit reaches no application. 0 turns the limit off.
"""

from __future__ import annotations

import logging
import sys
import time

from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import reactor

from channels_kit.conf import env_float

logger = logging.getLogger(__name__)

# How long a socket closed by the server waits for the client's close frame before its
# TCP connection is dropped: a client busy sending (a flood) answers late, and a drop
# would hide the close code from it.
CLOSE_HANDSHAKE_SECONDS = 10


class FloodLimitedProtocol(WebSocketProtocol):
    """Daphne's WebSocket protocol with a token bucket on the messages a client sends."""

    #: Messages per second a socket may send on average (0: no limit), and its burst.
    rate: float = 0.0
    burst: float = 0.0

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.rate > 0 and not self._allowed():
            return
        super().onMessage(payload, isBinary)

    def _allowed(self) -> bool:
        now = time.monotonic()
        tokens = getattr(self, "_tokens", self.burst)
        tokens = min(self.burst, tokens + (now - getattr(self, "_refilled", now)) * self.rate)
        self._refilled = now
        if tokens >= 1:
            self._tokens = tokens - 1
            return True
        self._tokens = tokens
        if not getattr(self, "_flooding", False):
            self._flooding = True
            logger.warning(
                "closing the WebSocket of %s with 1008: over %g messages a second (burst %g)",
                self.client_addr,
                self.rate,
                self.burst,
            )
            self.sendClose(code=1008, reason="too many messages")
        return False


class KitDaphneServer(Server):
    """Daphne's server, closing failed and flooding WebSockets with a close code."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        rate = env_float("WS_MAX_MESSAGES_PER_SECOND", 50.0)
        burst = max(1.0, env_float("WS_MESSAGE_BURST", rate))
        self.websocket_protocol = type(FloodLimitedProtocol.__name__, (FloodLimitedProtocol,), {})
        self.websocket_protocol.rate, self.websocket_protocol.burst = max(0.0, rate), burst

    def run(self) -> None:
        # Daphne builds its WebSocket factory inside run(); it must be set up before the
        # first connection, which the reactor accepts only once it runs.
        reactor.callWhenRunning(self._configure_websockets)
        super().run()

    def _configure_websockets(self) -> None:
        self.ws_factory.protocol = self.websocket_protocol
        self.ws_factory.setProtocolOptions(failByDrop=False, closeHandshakeTimeout=CLOSE_HANDSHAKE_SECONDS)


class KitCommandLineInterface(CommandLineInterface):
    """Daphne's command line, serving with ``KitDaphneServer``."""

    server_class = KitDaphneServer


def main() -> None:
    KitCommandLineInterface().run(sys.argv[1:])


if __name__ == "__main__":
    main()
