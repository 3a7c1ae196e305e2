"""The Locust scenarios (loadtest/) in tiny bounded runs against the test stack.

Correctness, not performance: each scenario runs alone for a few seconds with a few
users, in the loadtest image on the stack's network (`docker compose -f compose.yaml
-f compose/loadtest.yaml run locust`, as `make loadtest` does), all scenarios at once
to keep the module short. Every run must finish by itself with zero failures and
leave an HTML report and CSV stats that parse and hold the scenario's rows, the
WebSocket delivery rows among them.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, compose, parts

pytestmark = parts("direct")

LOADTEST = ["-f", "compose.yaml", "-f", "compose/loadtest.yaml"]
RUN_SECONDS = 8
# Scenario -> (users, the stats rows it must produce: (type, name)).
WS_CONNECT = ("WSCONNECT", "/ws/chat/[room]/")
SCENARIOS: dict[str, tuple[int, list[tuple[str, str]]]] = {
    "pages": (3, [("GET", "/?room=[room]"), ("GET", "/history/[room]/"), ("GET", "/healthz")]),
    "chat": (6, [WS_CONNECT, ("WSDELIVER", "chat small room")]),
    "fanout": (4, [WS_CONNECT, ("WSDELIVER", "fanout large room")]),
    "tasks": (
        3,
        [("POST", "/tasks/"), ("GET", "/tasks/[id]"), ("TASK", "task e2e"), ("TASK", "task queue+run")],
    ),
    "longpoll": (4, [("GET", "/poll/[room]/"), WS_CONNECT, ("LPDELIVER", "longpoll room")]),
    "io": (2, [("GET", "/io/")]),
}
# A quick pace, so a few users produce every row within seconds.
SETTINGS = {"THINK_SCALE": "0.1", "POLL_TIMEOUT": "2", "TASK_SLEEP": "0.05"}


@dataclass
class Run:
    """One finished Locust run: exit status, its output and its report directory."""

    status: int
    output: str
    directory: Path

    def rows(self) -> list[dict[str, str]]:
        with (self.directory / "stats_stats.csv").open(newline="") as stats:
            return list(csv.DictReader(stats))

    def html_stats(self) -> list[dict]:
        """The request statistics embedded in Locust's HTML report."""
        html = (self.directory / "report.html").read_text()
        assert html.lstrip().lower().startswith("<!doctype html"), html[:100]
        marker = "window.templateArgs = "
        start = html.index(marker) + len(marker)
        return json.loads(html[start : html.index("\n", start)].strip().rstrip(";"))["requests_statistics"]


def locust_command(scenario: str, users: int, directory: Path, seconds: int = RUN_SECONDS) -> list[str]:
    """`docker compose run` of one headless Locust on the test stack's network."""
    settings = SETTINGS | {"SCENARIO": scenario}
    env_args = [arg for key, value in settings.items() for arg in ("-e", f"{key}={value}")]
    return [
        "docker", "compose", *LOADTEST, "run", "--rm", "--no-deps", "-T",
        "--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{directory}:/out", *env_args,
        "locust", "locust", "--headless", "--users", str(users), "--spawn-rate", str(users),
        "--run-time", f"{seconds}s", "--stop-timeout", "3",
        "--csv", "/out/stats", "--html", "/out/report.html", "--only-summary",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Build the loadtest image (cached after the first time), then run every scenario at once."""
    build = compose(*LOADTEST, "build", "--quiet", "locust", check=False, timeout=900)
    assert build.returncode == 0, f"building the loadtest image failed:\n{build.stderr[-3000:]}"
    started = {}
    for scenario, (users, _rows) in SCENARIOS.items():
        directory = tmp_path_factory.mktemp(f"locust-{scenario}")
        process = subprocess.Popen(
            locust_command(scenario, users, directory),
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        started[scenario] = (process, directory)
    finished = {}
    for scenario, (process, directory) in started.items():
        try:
            output, _ = process.communicate(timeout=RUN_SECONDS + 90)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            pytest.fail(f"Locust ({scenario}) did not stop by itself:\n{output[-3000:]}")
        finished[scenario] = Run(process.returncode, output, directory)
    return finished


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_runs_without_failures_and_reports(runs: dict[str, Run], scenario: str):
    run = runs[scenario]
    assert run.status == 0, f"Locust exited {run.status} (failures?):\n{run.output[-3000:]}"
    rows = run.rows()
    by_key = {(row["Type"], row["Name"]): row for row in rows}
    for key in SCENARIOS[scenario][1]:
        assert key in by_key, f"no {key} row in stats_stats.csv: {sorted(by_key)}"
        assert int(by_key[key]["Request Count"]) > 0, by_key[key]
    assert all(row["Failure Count"] == "0" for row in rows), rows
    html_rows = {(row["method"], row["name"]) for row in run.html_stats()}
    assert set(SCENARIOS[scenario][1]) <= html_rows, html_rows
    summary = json.loads((run.directory / "stats_summary.json").read_text())
    assert summary["scenario"] == scenario and summary["total"]["failures"] == 0, summary


def test_delivery_latency_is_measured_on_every_other_member(runs: dict[str, Run]):
    """Rooms of 5: each post reaches 4 other members, so deliveries outnumber posts."""
    rows = {(row["Type"], row["Name"]): row for row in runs["chat"].rows()}
    delivered = rows[("WSDELIVER", "chat small room")]
    assert int(delivered["Request Count"]) >= 4, delivered
    assert 0 <= float(delivered["99%"]) < 5000, delivered


def test_summary_prints_http_and_websocket_percentiles(runs: dict[str, Run]):
    """The summary `make loadtest` prints (loadtest/report.py, standard library only)."""
    spec = importlib.util.spec_from_file_location("loadtest_report", REPO / "loadtest" / "report.py")
    assert spec is not None and spec.loader is not None
    report = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = report  # its dataclasses look their module up there
    spec.loader.exec_module(report)
    text = "\n".join(report.summary_lines(report.load_summary(runs["chat"].directory), "reports/x"))
    assert "WebSocket delivery" in text and "chat small room" in text and "p99 ms" in text, text
    text = "\n".join(report.summary_lines(report.load_summary(runs["pages"].directory), "reports/x"))
    assert "HTTP requests" in text and "failures 0 (0.00 %)" in text, text
