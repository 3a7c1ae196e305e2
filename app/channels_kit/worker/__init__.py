"""The worker tier: what ``manage.py runworker`` runs.

- ``server``: ``KitWorker``, a Channels ``Worker`` with bounded prefetch, a clean SIGTERM
  drain, a heartbeat and published state.
- ``slots``: one listener and one application instance: a message at a time per slot.
- ``selection``: which channels a worker serves (routed channels, ``--only-channels``,
  ``--exclude-channels``).
- ``errors``: the one logger of consumer tracebacks.
"""

from channels_kit.worker.server import KitWorker

__all__ = ["KitWorker"]
