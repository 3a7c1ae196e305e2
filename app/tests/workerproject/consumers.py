"""Jobs for the worker tests: each leaves marker files in ``WORKER_TEST_DIR``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from channels.consumer import SyncConsumer


def mark(name: str) -> None:
    """Create ``WORKER_TEST_DIR/<name>``, the tests' evidence that a step happened."""
    Path(os.environ["WORKER_TEST_DIR"], name).touch()


class JobConsumer(SyncConsumer):
    """``job.run`` sleeps ``sleep`` seconds between two markers; ``job.fail`` raises."""

    def job_run(self, message: dict) -> None:
        mark(f"started-{message['id']}")
        time.sleep(float(message.get("sleep", 0)))
        mark(f"done-{message['id']}")

    def job_fail(self, message: dict) -> None:
        mark(f"failed-{message['id']}")
        raise RuntimeError(f"job {message['id']} failed on purpose")
