"""Consumer errors of a worker: one logger for every traceback, sent to stderr by ``runworker``.

Whatever runs a message (a consumer in a worker's ``ConsumerSlot``, a relayed request or
event) logs its failure on ``channels_kit.worker.errors``, so that operators find every
traceback in one stream and projects can route it with ``LOGGING``. The logger keeps that
name, its name since the first release, though the module lives here, below both the
worker (``channels_kit.worker``) and relay mode (``channels_kit.relay``) that log on it;
``channels_kit.worker.errors`` re-exports it.
"""

from __future__ import annotations

import logging
import sys

ERRORS_LOGGER_NAME = "channels_kit.worker.errors"

errors_logger = logging.getLogger(ERRORS_LOGGER_NAME)


def send_consumer_errors_to_stderr() -> None:
    """Send consumer tracebacks to stderr, unless the project's ``LOGGING`` already gives
    ``channels_kit.worker.errors`` handlers of its own."""
    if errors_logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    errors_logger.addHandler(handler)
    errors_logger.propagate = False
