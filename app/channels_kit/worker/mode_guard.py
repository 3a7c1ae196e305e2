"""A worker in direct mode refuses to run beside relay interfaces.

Relay interfaces send every request and WebSocket event to workers in relay mode. A
worker started with ``ASGI_MODE=direct`` beside them (an ``ASGI_MODE`` exported in the
shell wins over ``.env`` for compose) serves none of it: measured, 13,990 of 14,500
deliveries lost, each event sent four times, the clients told nothing. Each interface
publishes its presence among the workers' states (``observe.worker_state.INTERFACE_MARK``);
a worker that is not in relay mode reads them at start and on every heartbeat, and stops
with an error that names both modes when it finds one (``ModeMismatch``: ``runworker``
exits non-zero and says why).
"""

from __future__ import annotations

import logging

from channels_kit.layers.base import LayerInspector
from channels_kit.observe.worker_state import is_interface

logger = logging.getLogger("channels_kit.worker.server")


class ModeMismatch(RuntimeError):
    """Relay interfaces run beside a worker that is not in relay mode."""


class ModeGuard:
    """Looks for relay interfaces beside a worker in ``mode`` (anything but relay)."""

    def __init__(self, inspector: LayerInspector, mode: str) -> None:
        self.inspector = inspector
        self.mode = mode

    async def problem(self) -> str | None:
        """Why this worker must not run (relay interfaces are live), else None. A failed read
        says nothing: the layer's troubles are the heartbeat's to report."""
        try:
            states = await self.inspector.worker_states()
        except Exception as error:  # noqa: BLE001 - not known now; the next beat reads again
            logger.debug("could not read the published states (%r)", error)
            return None
        interfaces = sorted(f"{state.host}:{state.pid}" for state in states if is_interface(state))
        if not interfaces:
            return None
        return (
            f"this worker runs in {self.mode} mode (ASGI_MODE={self.mode}), but relay interfaces "
            f"(ASGI_MODE=relay) run beside it on the same channel layer: {', '.join(interfaces[:5])}"
            f"{' and more' if len(interfaces) > 5 else ''}. They send every request and WebSocket "
            "event to workers in relay mode, which this one would leave unserved. Start it with "
            "ASGI_MODE=relay (or runworker --relay); an ASGI_MODE exported in the shell wins over "
            ".env for docker compose"
        )
