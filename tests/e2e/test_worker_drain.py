"""Deploying new versions of code: SIGTERM makes a worker finish its running
consumer and exit cleanly. `docker compose stop` sends it (after `stop_grace_period`, a kill)."""

import json
import re
import time

from conftest import compose, parts, post_task, wait_for_task

pytestmark = parts("direct")

SERVICE = "worker-slow"


def _exit_codes(service: str) -> list[int]:
    output = compose("ps", "--all", "--format", "json", service).stdout
    return [json.loads(line)["ExitCode"] for line in output.splitlines() if line.strip()]


def test_stopping_a_worker_lets_its_running_task_finish():
    task_id = post_task({"sleep": 5, "name": "drain-1"}, channel="thumbnail")
    wait_for_task(task_id, statuses=("running",))
    try:
        stopping = time.monotonic()
        compose("stop", SERVICE, timeout=60)
        # `stop` returned once the worker exited: after the job, not at once.
        assert time.monotonic() - stopping > 2
        task = wait_for_task(task_id, timeout=1)
        assert task["status"] == "done", task
        assert _exit_codes(SERVICE) and set(_exit_codes(SERVICE)) == {0}
        logs = compose("logs", "--no-color", SERVICE).stdout
        assert "SIGTERM: taking no new messages; 1 in flight" in logs
        assert re.search(r"drained: \d+ message\(s\) handled, 0 failed; exiting", logs), logs
    finally:
        compose("up", "--detach", "--wait", "--no-deps", SERVICE)
