"""Who is answering: ``<role>/<hostname>``, as sent in ``X-Served-By`` and hello frames.

``server_identity()`` names a container by its role (``daphne/web-1``): one per container,
the same for every process in it. A worker *process* is named by
``channels_kit.observe.worker_state.worker_identity()``, ``<hostname>:<pid>``, instead.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

ROLE_ENV = "SERVER_ROLE"


def server_role() -> str:
    """The role of this process (``daphne``, ``worker``, ``uwsgi``), from ``SERVER_ROLE``."""
    return os.environ.get(ROLE_ENV, "").strip() or "django"


def server_identity() -> str:
    """``<role>/<hostname>``: unique per container (not per process: see
    ``worker_state.worker_identity()`` for that), stable for the process's life."""
    return f"{server_role()}/{socket.gethostname()}"


def interface_identity(scope: Mapping[str, Any] | None) -> str:
    """The interface server holding a connection: in relay mode the Daphne that relayed it
    (``scope["relay"]["interface"]``), in direct mode this process."""
    relay = (scope or {}).get("relay")
    if isinstance(relay, Mapping) and relay.get("interface"):
        return str(relay["interface"])
    return server_identity()
