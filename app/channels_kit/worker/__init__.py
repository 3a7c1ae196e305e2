"""The worker tier: what ``manage.py runworker`` runs.

- ``server``: ``KitWorker``, a Channels ``Worker`` with bounded prefetch, a clean SIGTERM
  drain, a heartbeat and published state.
- ``slots``: one listener and one application instance: a message at a time per slot.
- ``mode_guard``: a worker not in relay mode refuses to run beside relay interfaces.
- ``selection``: which channels a worker serves (routed channels, ``--only-channels``,
  ``--exclude-channels``).
- ``errors``: the old import path of the consumer-errors logger
  (``channels_kit.observe.consumer_errors``), whose name it still is.
"""

from channels_kit.worker.server import KitWorker

__all__ = ["KitWorker"]
