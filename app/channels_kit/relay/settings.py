"""How an interface server's relay behaves (``RelaySettings``) and what it counts (``RelayStats``).

``channels_kit.relay.asgi`` reads the settings from the environment; the counters show
in the interface's health endpoint. Both the application (``interface``) and each of its
sockets (``websocket``) use them. Not Django settings: those of a deployed project are
``channels_kit.project.settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from channels_kit.observe.identity import server_identity, server_role


@dataclass
class RelaySettings:
    """How the relay behaves; ``channels_kit.relay.asgi`` reads them from the environment."""

    # Seconds a worker has to start an HTTP response or finish a WebSocket event.
    timeout: float = 120.0
    # Largest request body relayed; bigger ones get 413.
    max_body: int = 1024 * 1024
    # Answered by the interface itself (liveness): every other path goes to the workers.
    health_path: str = "/healthz"
    # Frames of one socket waiting for a worker before the socket is closed (4429).
    max_queued_events: int = 100
    # Seconds between renewals of this interface's group memberships.
    group_refresh: float = 60.0
    # With no live worker serving a request's (or a socket's) channel, how long it waits
    # for one to appear before it is refused (503, 4503); None: it waits for the timeout.
    no_worker_wait: float | None = 5.0
    # Seconds between two reads of the workers' published states.
    worker_check: float = 2.0
    # Seconds a request or event may wait for a worker to take it before it is presumed
    # lost and sent again (doubled for each further attempt); None: never sent again.
    resend_after: float | None = 4.0
    # Seconds between two "still running it" beats of the worker holding a message.
    alive_every: float = 1.0
    identity: str = field(default_factory=server_identity)
    role: str = field(default_factory=server_role)


@dataclass
class RelayStats:
    """Counters of one interface process, shown by its health endpoint."""

    http_requests: int = 0
    http_timeouts: int = 0
    http_rejected: int = 0
    websocket_connections: int = 0
    websocket_open: int = 0
    websocket_events: int = 0
    websocket_events_dropped: int = 0
    websocket_timeouts: int = 0
    http_no_worker: int = 0
    websocket_no_worker: int = 0
    http_resent: int = 0
    websocket_events_resent: int = 0
