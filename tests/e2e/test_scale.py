"""`docker compose scale worker=8` gives 8 running, healthy general workers that serve tasks
(on the `tasks` channel: the `worker` service serves every channel but `thumbnail`)."""

import json
import time

from conftest import compose, parts, run_task, service_hosts

pytestmark = parts("direct")


def _worker_states() -> list[tuple[str, str]]:
    output = compose("ps", "--format", "json", "worker").stdout
    rows = [json.loads(line) for line in output.splitlines() if line.strip()]
    return [(row["State"], row.get("Health", "")) for row in rows]


def _wait_for_healthy_workers(count: int, timeout: float = 180) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    states = _worker_states()
    while time.monotonic() < deadline:
        states = _worker_states()
        if len(states) == count and all(s == ("running", "healthy") for s in states):
            return states
        time.sleep(2)
    raise AssertionError(f"expected {count} healthy workers, got {states}")


def test_scale_workers_to_eight_and_back():
    try:
        compose("scale", "worker=8")
        states = _wait_for_healthy_workers(8)
        assert len(states) == 8
        workers = {run_task({"n": n}, channel="tasks")["worker"] for n in range(8)}
        hosts = service_hosts("worker")
        assert all(w.startswith("worker/") and w.removeprefix("worker/") in hosts for w in workers)
    finally:
        compose("scale", "worker=1")
    _wait_for_healthy_workers(1)
