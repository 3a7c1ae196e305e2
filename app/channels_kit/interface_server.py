"""Daphne as the kit runs it (``python -m channels_kit.interface_server``, Daphne's own options).

The name is Channels' own: an *interface server* is the process that holds the clients'
HTTP and WebSocket connections (Daphne here), as opposed to a worker, which runs
background channels (``channels_kit.worker``). It is the kit's Daphne server in both
modes; the relay application it may serve is ``channels_kit.relay``.

Three changes to Daphne's server, for every WebSocket it holds (the project's in direct
mode, the relay's in relay mode; ``manage.py runall`` serves with the same class):

- **A drain on SIGTERM.** The server stops listening first, so that nginx sends new
  connections to the other replicas (it retries a refused connection on the next one),
  then closes its WebSockets with 1012, "service restart", each at a random moment of
  ``DAPHNE_DRAIN_SECONDS`` (10 s), so that their clients reconnect elsewhere spread out
  rather than all at once; requests in flight may finish meanwhile. Then Daphne stops its
  applications and exits, as it does. 0: no drain.

- A WebSocket that Autobahn fails (a message over ``--websocket-max-message-size``, a
  frame over the frame limit, a protocol error) is closed with its close code, 1009
  "message too big" or 1002, instead of a dropped TCP connection that leaves the client
  with 1006 and no reason.
- A socket that sends more than ``WS_MAX_MESSAGES_PER_SECOND`` messages a second (in
  bursts of up to ``WS_MESSAGE_BURST``) is closed with 1008, "policy violation"; what it
  sent over the limit reaches no application. 0 turns the limit off.
- **Lifespan events**, which Daphne does not send (``channels_kit.lifespan``): startup
  when the server starts, shutdown after the drain, when its connections are gone (the
  relay then finishes what its closed sockets left queued and leaves its groups), at most
  ``LIFESPAN_SECONDS`` each. An application that takes none (Django's) is left alone.

It runs on the event loop ``EVENT_LOOP`` names (uvloop when installed:
``channels_kit.event_loop``). With ``DAPHNE_METRICS_PORT`` it also serves Prometheus ``/metrics``
(``channels_kit.observe.daphne_metrics``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time

from channels_kit.event_loop import install_twisted_reactor

# Before Daphne's import installs a reactor on a loop of its own: EVENT_LOOP's (uvloop).
EVENT_LOOP = install_twisted_reactor()

from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol  # noqa: E402
from daphne.cli import CommandLineInterface  # noqa: E402
from daphne.server import Server  # noqa: E402
from daphne.ws_protocol import WebSocketProtocol  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402

from channels_kit.conf import env_float, env_int  # noqa: E402
from channels_kit.lifespan import Lifespan  # noqa: E402

# Named, not __name__: run as ``python -m``, this module is __main__.
logger = logging.getLogger("channels_kit.interface_server")

# How long a socket closed by the server waits for the client's close frame before its
# TCP connection is dropped: a client busy sending (a flood) answers late, and a drop
# would hide the close code from it.
CLOSE_HANDSHAKE_SECONDS = 10
# WebSocket close code of a draining server: "service restart" (RFC 6455 7.4.1, IANA).
CLOSE_SERVICE_RESTART = 1012
# After the drain window: how long the last sockets' close handshakes may take.
DRAIN_CLOSE_MARGIN_SECONDS = 2.0
# How long the application's lifespan startup and shutdown may take, each (the relay's
# shutdown: up to its SHUTDOWN_FINISH_SECONDS, 5, then leaving its groups).
LIFESPAN_SECONDS = 7.0


class FloodLimitedProtocol(WebSocketProtocol):
    """Daphne's WebSocket protocol with a token bucket on the messages a client sends."""

    #: Messages per second a socket may send on average (0: no limit), and its burst.
    rate: float = 0.0
    burst: float = 0.0

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.rate > 0 and not self._allowed():
            return
        super().onMessage(payload, isBinary)

    def serverSend(self, content: str | bytes, binary: bool = False) -> None:
        if self.muted:  # closed by the server (a flood, a drain): the application's late sends go
            return
        super().serverSend(content, binary)

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
            close_muted(self, 1008, b"too many messages")
        return False


def with_backlog(endpoint: str, backlog: int) -> str:
    """A TCP endpoint description with a listen backlog (Twisted's default, 50, drops the SYNs
    of a reconnect storm: those clients retry after 1, 3, 7 s); others unchanged."""
    if not endpoint.startswith("tcp:") or ":backlog=" in endpoint or backlog <= 0:
        return endpoint
    return f"{endpoint}:backlog={backlog}"


class KitDaphneServer(Server):
    """Daphne's server: failed and flooding WebSockets closed with a code, a drain on SIGTERM."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.endpoints = [with_backlog(e, env_int("DAPHNE_LISTEN_BACKLOG", 1024)) for e in self.endpoints]
        self.drain_seconds = max(0.0, env_float("DAPHNE_DRAIN_SECONDS", 10.0))
        self.ports: list = []
        rate = env_float("WS_MAX_MESSAGES_PER_SECOND", 50.0)
        burst = max(1.0, env_float("WS_MESSAGE_BURST", rate))
        self.websocket_protocol = type(FloodLimitedProtocol.__name__, (FloodLimitedProtocol,), {})
        self.websocket_protocol.rate, self.websocket_protocol.burst = max(0.0, rate), burst
        metrics_port = env_int("DAPHNE_METRICS_PORT", 0)
        if metrics_port:
            try:
                from channels_kit.observe.daphne_metrics import serve_daphne_metrics
            except ImportError as exc:
                logger.warning(
                    "DAPHNE_METRICS_PORT is set, but %s: install the kit's 'metrics' extra "
                    "(pip install './app[metrics]' from the root of the kit's checkout)",
                    exc,
                )
            else:
                serve_daphne_metrics(self, metrics_port)

    def run(self) -> None:
        # Daphne builds its WebSocket factory inside run(); it must be set up before the
        # first connection, which the reactor accepts only once it runs.
        reactor.callWhenRunning(self._configure_websockets)
        reactor.callWhenRunning(self._start_lifespan)
        logger.info("serving on the %s event loop", EVENT_LOOP)
        super().run()

    def _configure_websockets(self) -> None:
        self.ws_factory.protocol = self.websocket_protocol
        self.ws_factory.setProtocolOptions(failByDrop=False, closeHandshakeTimeout=CLOSE_HANDSHAKE_SECONDS)

    def _start_lifespan(self) -> None:
        self.lifespan = Lifespan(self.application, LIFESPAN_SECONDS)
        started = defer.Deferred.fromFuture(asyncio.ensure_future(self.lifespan.startup()))
        started.addCallback(lambda ok: None if ok else reactor.stop())

    def listen_success(self, port) -> None:
        self.ports.append(port)
        super().listen_success(port)

    def kill_all_applications(self) -> defer.Deferred:
        """Daphne's last step before the reactor stops (SIGTERM): drain first, and end with the
        application's lifespan shutdown."""
        drained = defer.ensureDeferred(self.drain())
        drained.addErrback(lambda failure: logger.error("draining failed: %s", failure.getErrorMessage()))
        drained.addCallback(lambda _: super(KitDaphneServer, self).kill_all_applications())
        drained.addCallback(lambda _: self._stop_lifespan())
        return drained

    def _stop_lifespan(self) -> defer.Deferred | None:
        lifespan = getattr(self, "lifespan", None)
        if lifespan is None:
            return None
        stopped = defer.Deferred.fromFuture(asyncio.ensure_future(lifespan.shutdown()))
        stopped.addErrback(
            lambda failure: logger.error("lifespan shutdown failed: %s", failure.getErrorMessage())
        )
        return stopped

    async def drain(self) -> None:
        """No new connections; the WebSockets closed with 1012 over ``drain_seconds``."""
        if self.drain_seconds <= 0:
            return
        for port in self.ports:
            await port.stopListening()
        started = time.monotonic()
        deadline = started + self.drain_seconds
        logger.info(
            "draining: no new connections; closing %d WebSocket(s) with %d over %g s",
            len(self._open_sockets()),
            CLOSE_SERVICE_RESTART,
            self.drain_seconds,
        )
        closing: set[WebSocketProtocol] = set()
        while True:
            # Sockets opened meanwhile (nginx reusing a kept-alive connection) close too.
            for protocol in self._open_sockets() - closing:
                closing.add(protocol)
                delay = random.uniform(0, max(0.0, deadline - time.monotonic()))
                reactor.callLater(delay, _close_for_restart, protocol)
            busy = [details for details in self.connections.values() if "disconnected" not in details]
            if not busy or time.monotonic() > deadline + DRAIN_CLOSE_MARGIN_SECONDS:
                break
            await task.deferLater(reactor, 0.2, lambda: None)
        logger.info(
            "drained in %.1f s: %d socket(s) closed, %d connection(s) still open",
            time.monotonic() - started,
            len(closing),
            len(busy),
        )

    def _open_sockets(self) -> set[WebSocketProtocol]:
        return {
            protocol
            for protocol in self.connections
            if isinstance(protocol, WebSocketProtocol) and protocol.state == AutobahnProtocol.STATE_OPEN
        }


def close_muted(protocol: WebSocketProtocol, code: int, reason: bytes) -> None:
    """Close a socket with a protocol-level code; what its application still sends is dropped
    (Daphne's ``muted``), not an error of sending on a closed socket."""
    if protocol.state == AutobahnProtocol.STATE_OPEN:
        protocol.muted = True
        # sendCloseFrame: Autobahn's sendClose() takes application codes only (1000, 3000+).
        protocol.sendCloseFrame(code=code, reasonUtf8=reason, isReply=False)


def _close_for_restart(protocol: WebSocketProtocol) -> None:
    close_muted(protocol, CLOSE_SERVICE_RESTART, b"service restart")


class KitCommandLineInterface(CommandLineInterface):
    """Daphne's command line, serving with ``KitDaphneServer``."""

    server_class = KitDaphneServer


def main() -> None:
    KitCommandLineInterface().run(sys.argv[1:])


if __name__ == "__main__":
    main()
