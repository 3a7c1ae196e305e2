"""`make loadtest` for a project of the user's: the generic scenarios from its description.

Runs only against the stack deployed for tests/projects/mysite (KIT_PROJECT=mysite; scripts/test
sets it). One short bounded run of `loadtest/bin/loadtest` with
LOADTEST_SPEC=tests/projects/mysite-loadtest.toml (its pages, and both chat consumers as
broadcasts to rooms): zero failures, WebSocket deliveries on both consumers, and the report
`make loadtest` leaves (HTML, CSV, summary). A wrong description stops before Locust starts,
naming the file, the key and the value.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, parts

pytestmark = [
    *parts("direct", "project_relay"),
    pytest.mark.skipif(
        os.environ.get("KIT_PROJECT") != "mysite",
        reason="needs the stack deployed for tests/projects/mysite (KIT_PROJECT=mysite)",
    ),
]

SPEC = "tests/projects/mysite-loadtest.toml"
RUN_SECONDS = 20
# Users by the description's weights (pages 2, async chat 2, sync chat 1): every part gets some.
SETTINGS = {
    "LOADTEST_SPEC": SPEC,
    "SCENARIO": "mixed",
    "USERS": "12",
    "SPAWN_RATE": "12",
    "DURATION": f"{RUN_SECONDS}s",
    "THINK_SCALE": "0.2",
}
# The rows the description must produce: (type, name).
ROWS = [
    ("GET", "/chat/"),
    ("GET", "/chat/[room]/"),
    ("WSCONNECT", "/ws/chat/[room]/"),
    ("WSCONNECT", "/ws/sync-chat/[room]/"),
    ("WSDELIVER", "chat (async)"),
    ("WSDELIVER", "chat (sync)"),
]


@dataclass
class Run:
    """One finished `loadtest/bin/loadtest`: exit status, its output and its report directory."""

    status: int
    output: str
    directory: Path

    def rows(self) -> dict[tuple[str, str], dict[str, str]]:
        with (self.directory / "stats_stats.csv").open(newline="") as stats:
            return {(row["Type"], row["Name"]): row for row in csv.DictReader(stats)}

    def summary(self) -> dict:
        return json.loads((self.directory / "stats_summary.json").read_text())


def loadtest(settings: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`loadtest/bin/loadtest` against the stack under test, with ``settings`` in its environment."""
    return subprocess.run(
        [str(REPO / "loadtest/bin/loadtest")],
        cwd=REPO,
        env=os.environ | settings,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    """One bounded run of the generic scenarios; its report directory is removed afterwards."""
    directory = REPO / "loadtest" / "reports" / f"e2e-project-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    try:
        done = loadtest(SETTINGS | {"REPORT_DIR": str(directory)}, timeout=RUN_SECONDS + 900)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"loadtest/bin/loadtest did not stop by itself:\n{str(exc.stdout)[-3000:]}")
    yield Run(done.returncode, done.stdout + done.stderr, directory)
    shutil.rmtree(directory, ignore_errors=True)


def test_generic_scenarios_run_without_failures(run: Run):
    locust_log = run.directory / "locust.log"
    log = locust_log.read_text()[-3000:] if locust_log.exists() else ""
    assert run.status == 0, f"loadtest/bin/loadtest exited {run.status}:\n{run.output[-3000:]}\n{log}"
    errors = run.summary()["errors"]
    assert not errors, f"failures: {errors}\n{run.output[-3000:]}"
    rows = run.rows()
    for key in ROWS:
        assert key in rows, f"no {key} row in stats_stats.csv: {sorted(rows)}"
        assert int(rows[key]["Request Count"]) > 0, rows[key]
    assert all(row["Failure Count"] == "0" for row in rows.values()), rows


def test_websocket_deliveries_are_measured_on_both_consumers(run: Run):
    summary = run.summary()
    delivery = summary["categories"]["ws delivery"]
    assert delivery["requests"] > 0 and delivery["failures"] == 0, delivery
    assert 0 <= delivery["p99_ms"] < 5000, delivery
    rows = run.rows()
    for name in ("chat (async)", "chat (sync)"):
        assert int(rows[("WSDELIVER", name)]["Request Count"]) > 0, rows[("WSDELIVER", name)]


def test_report_and_summary_as_for_the_demo(run: Run):
    """The same report directory: HTML report, CSV stats and history, summary naming the description."""
    files = ("report.html", "stats_stats.csv", "stats_stats_history.csv", "stats_summary.json", "locust.log")
    for name in files:
        assert (run.directory / name).is_file(), f"{name} missing in {run.directory}"
    html = (run.directory / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "chat (async)" in html
    assert run.summary()["spec"] == SPEC
    printed = (f"scenario mixed from {SPEC}", "WebSocket delivery", "chat (sync)", "failures 0 (0.00 %)")
    missing = [line for line in printed if line not in run.output]
    assert not missing, f"not in the summary: {missing}\n{run.output[-3000:]}"


def test_a_wrong_description_stops_before_locust(tmp_path: Path):
    """A mistake in the file: `make loadtest` stops with the file, the key, the value and the choices."""
    spec = tmp_path / "wrong.toml"
    spec.write_text(
        '[websocket]\npath = "/ws/chat/{room}/"\nsend = \'{"message": "{token}"}\'\nexpect = "ech"\n'
    )
    directory = REPO / "loadtest" / "reports" / f"e2e-project-wrong-{os.getpid()}"
    done = loadtest(SETTINGS | {"LOADTEST_SPEC": str(spec), "REPORT_DIR": str(directory)}, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert f"{spec}: websocket.expect = 'ech': allowed: echo or broadcast" in output, output[-3000:]
    assert not directory.exists(), "Locust ran with a wrong description"
