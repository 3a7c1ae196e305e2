"""Daphne as the kit runs it (``python -m channels_kit.interface_server``, Daphne's own options).

One change to Daphne's server: a WebSocket that Autobahn fails (a message over
``--websocket-max-message-size``, a protocol error) is closed with its close code, 1009
"message too big" or 1002, instead of a dropped TCP connection that leaves the client
with 1006 and no reason. ``manage.py runall`` serves with the same class.
"""

from __future__ import annotations

import sys

from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.internet import reactor


class KitDaphneServer(Server):
    """Daphne's server, failing WebSockets with a close frame rather than by dropping them."""

    def run(self) -> None:
        # Daphne builds its WebSocket factory inside run(); the option must be set before
        # the first connection, which the reactor accepts only once it runs.
        reactor.callWhenRunning(self._close_failed_websockets_cleanly)
        super().run()

    def _close_failed_websockets_cleanly(self) -> None:
        self.ws_factory.setProtocolOptions(failByDrop=False)


class KitCommandLineInterface(CommandLineInterface):
    """Daphne's command line, serving with ``KitDaphneServer``."""

    server_class = KitDaphneServer


def main() -> None:
    KitCommandLineInterface().run(sys.argv[1:])


if __name__ == "__main__":
    main()
