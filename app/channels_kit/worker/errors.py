"""Consumer errors of a worker: one logger for every traceback, sent to stderr by ``runworker``.

Whatever runs a message (a consumer in a ``ConsumerSlot``, a relayed request or event)
logs its failure on ``channels_kit.worker.errors``, so that operators find every
traceback in one stream and projects can route it with ``LOGGING``.
"""

from __future__ import annotations

import logging
import sys

errors_logger = logging.getLogger(__name__)


def send_consumer_errors_to_stderr() -> None:
    """Send consumer tracebacks to stderr, unless the project's ``LOGGING`` already gives
    ``channels_kit.worker.errors`` handlers of its own."""
    if errors_logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    errors_logger.addHandler(handler)
    errors_logger.propagate = False
