"""Load visibility on the running stack: with a backlog on `thumbnail`, `make status` shows the
queue and a busy worker, and the thumbnail worker's /metrics reports the same depth."""

from __future__ import annotations

import re
import subprocess
import time

from conftest import REPO, compose, parts, post_task, service_hosts, wait_for_task

pytestmark = parts("direct", "local", "rabbitmq", "postgres")

CHANNEL = "thumbnail"
SERVICE = "worker-slow"
JOB_SECONDS = 2
# Queued behind the running ones: enough to outlast a heartbeat (5 s) and still leave a backlog.
BACKLOG = 6
FETCH_METRICS = (
    "import urllib.request; "
    "print(urllib.request.urlopen('http://127.0.0.1:9100/metrics', timeout=10).read().decode())"
)
SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$")
# A worker row of `make status` (HOST PID CHANNELS BUSY ...) serving CHANNEL with one busy.
BUSY_THUMBNAIL_ROW = re.compile(rf"^\S+\s+\d+\s+{CHANNEL}\s+1\s", re.MULTILINE)


def make_status() -> str:
    """`make status` with the test stack's environment (COMPOSE_PROJECT_NAME and friends)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "status"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def status_figures(text: str) -> tuple[int, int, int]:
    """(total depth of CHANNEL, busy workers, live workers) from the report."""
    total = next((line.split() for line in text.splitlines() if line.split()[:2] == [CHANNEL, "total"]), None)
    summary = re.search(r"^(\d+) of (\d+) workers busy$", text, re.MULTILINE)
    assert total and summary, text
    return int(total[2]), int(summary[1]), int(summary[2])


def metrics() -> dict[tuple[str, str], float]:
    """The thumbnail worker's /metrics, fetched inside its container: {(name, labels): value}."""
    output = compose("exec", "-T", SERVICE, "python", "-c", FETCH_METRICS, timeout=60).stdout
    samples = {}
    for line in output.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples[(match[1], match[2] or "")] = float(match[3])
    return samples


def queue_depth(samples: dict[tuple[str, str], float], channel: str) -> int:
    return int(
        sum(
            v
            for (name, labels), v in samples.items()
            if name == "channels_queue_depth" and f'channel="{channel}"' in labels
        )
    )


def test_make_status_and_metrics_show_the_thumbnail_backlog():
    workers = len(service_hosts(SERVICE))
    ids = [
        post_task({"sleep": JOB_SECONDS, "name": f"status-{n}"}, channel=CHANNEL)
        for n in range(workers + BACKLOG)
    ]
    try:
        wait_for_task(ids[0], statuses=("running", "done"))
        # Worker figures are as fresh as the last heartbeat (5 s): poll until a thumbnail
        # worker shows busy (the general worker may be busy with another test's task).
        deadline = time.monotonic() + 12
        while True:
            report = make_status()
            depth, busy, live = status_figures(report)
            if BUSY_THUMBNAIL_ROW.search(report) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        samples = metrics()

        assert depth >= 1, report
        assert busy >= 1 and live >= workers + 1, report  # + the general `worker`
        assert BUSY_THUMBNAIL_ROW.search(report), report
        assert samples[("channels_status_up", "")] == 1
        # Only consumption happens between the two reads (no new sends): at most a job or two.
        assert depth - 2 <= queue_depth(samples, CHANNEL) <= depth, (report, samples)
        assert samples[("channels_worker_busy", f'channel="{CHANNEL}"')] == 1
        assert samples[("channels_workers_busy", "")] >= 1
        assert samples[("channels_workers_live", "")] >= workers + 1
    finally:
        for task_id in ids:  # let the backlog drain, so later tests find idle workers
            wait_for_task(task_id, timeout=(workers + BACKLOG) * JOB_SECONDS + 15)
