"""The logger of consumer tracebacks, by the name operators route (``channels_kit.worker.errors``).

It lives in ``channels_kit.observe.consumer_errors``, below both the worker and relay mode,
which log on it; this module keeps the old import path working.
"""

from channels_kit.observe.consumer_errors import errors_logger, send_consumer_errors_to_stderr

__all__ = ["errors_logger", "send_consumer_errors_to_stderr"]
