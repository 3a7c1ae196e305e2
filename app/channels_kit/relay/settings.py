"""How an interface server's relay behaves (``RelaySettings``) and what it counts (``RelayStats``).

``channels_kit.relay.asgi`` reads the settings from the environment; the counters show
in the interface's health endpoint. Both the application (``interface``) and each of its
sockets (``websocket``) use them. Not Django settings: those of a deployed project are
``channels_kit.project.settings``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from channels_kit.observe.identity import server_identity, server_role

# RFC 9110 9.2.2: requests whose repetition has the effect of one.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


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
    # Seconds between renewals of this interface's group memberships (0: none, for tests).
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
    # HTTP methods sent again when their worker is presumed dead (RFC 9110's idempotent
    # ones by default); a request of another method whose worker died gets 502.
    resend_methods: frozenset[str] = IDEMPOTENT_METHODS
    identity: str = field(default_factory=server_identity)
    role: str = field(default_factory=server_role)

    def __post_init__(self) -> None:
        """``ValueError`` for a value the relay cannot work with (a zero timeout answers every
        request 504; a negative beat makes the workers beat without pause)."""
        for name in ("timeout", "worker_check", "alive_every"):
            _check(name, getattr(self, name), "a number of seconds above 0", minimum=0.0, above=True)
        _check("group_refresh", self.group_refresh, "a number of seconds >= 0 (0: no renewals)", 0)
        for name in ("max_body", "max_queued_events"):
            _check(name, getattr(self, name), "at least 1", minimum=1)
        if self.no_worker_wait is not None:
            _check("no_worker_wait", self.no_worker_wait, "a number of seconds >= 0 (None: no such wait)", 0)
        if self.resend_after is not None:
            _check(
                "resend_after", self.resend_after, "a number of seconds above 0 (None: never)", 0, above=True
            )


def resend_methods(value: str) -> frozenset[str]:
    """``RELAY_RESEND_METHODS``: HTTP methods, separated by spaces or commas (``-``: none)."""
    methods = frozenset(m.upper() for m in value.replace(",", " ").split() if m != "-")
    bad = sorted(m for m in methods if not m.isascii() or not m.isalpha())
    if bad:
        raise ValueError(
            f"RELAY_RESEND_METHODS={value!r}: {', '.join(bad)} is not an HTTP method; allowed: "
            "method names separated by spaces or commas (e.g. 'GET HEAD OPTIONS PUT DELETE'), or '-' for none"
        )
    return methods


def _check(name: str, value: float, allowed: str, minimum: float, above: bool = False) -> None:
    if not (math.isfinite(value) and (value > minimum if above else value >= minimum)):
        raise ValueError(f"{name} must be {allowed}, not {value!r}")


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
    http_worker_lost: int = 0
    websocket_events_resent: int = 0
