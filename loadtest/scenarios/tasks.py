"""Background tasks: ``POST /tasks/`` on the ``tasks`` channel, then poll until a worker finished it.

Two TASK events per job: ``task e2e`` (client: from the POST to the poll that saw it
done, so it includes the polling interval) and ``task queue+run`` (server: the job's
``created`` to ``finished`` timestamps, queue wait plus run time, exact).
"""

from __future__ import annotations

import time
from datetime import datetime

import gevent
from locust import FastHttpUser, between, tag, task

from .config import SETTINGS
from .metrics import TASK, TASK_E2E, TASK_SERVER, fire

# Polls start quick and back off (to TASK_POLL_MAX), so a long queue is not a flood of GETs.
FIRST_POLL = 0.05


class TaskFailed(Exception):
    """The worker marked the task failed, or it did not finish in time."""


class TaskUser(FastHttpUser):
    """Queues a job (``{"channel": "tasks", "sleep": TASK_SLEEP}``), waits for it, thinks 1-5 s."""

    scenario = "tasks"
    weight = 1
    wait_time = between(*SETTINGS.think(1, 5))
    default_headers = {"Host": SETTINGS.host_header}

    @tag("tasks")
    @task
    def run_task(self) -> None:
        started = time.time()
        payload = {"channel": SETTINGS.task_channel, "sleep": SETTINGS.task_sleep}
        with self.client.post("/tasks/", json=payload, name="/tasks/", catch_response=True) as response:
            if response.status_code != 202:
                response.failure(f"expected 202, got {response.status_code}")
                return
            task_id = response.json()["id"]
        deadline = time.monotonic() + SETTINGS.task_timeout
        # No job is done before its own sleep: the first poll waits that long.
        delay = max(FIRST_POLL, SETTINGS.task_sleep)
        while time.monotonic() < deadline:
            gevent.sleep(delay)
            delay = min(delay * 1.5, SETTINGS.task_poll_max)
            with self.client.get(f"/tasks/{task_id}", name="/tasks/[id]", catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"expected 200, got {response.status_code}")
                    continue
                job = response.json()
            if job["status"] == "done":
                fire(self.environment, TASK, TASK_E2E, started)
                server_ms = (
                    datetime.fromisoformat(job["finished"]) - datetime.fromisoformat(job["created"])
                ).total_seconds() * 1000.0
                fire(self.environment, TASK, TASK_SERVER, started, elapsed_ms=server_ms)
                return
            if job["status"] == "failed":
                error = TaskFailed(f"failed: {job['result']}")
                fire(self.environment, TASK, TASK_E2E, started, exception=error)
                return
        error = TaskFailed(f"not done within {SETTINGS.task_timeout:g} s")
        fire(self.environment, TASK, TASK_E2E, started, exception=error)
