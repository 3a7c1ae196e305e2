"""Custom Locust events (WebSocket delivery, task completion) and the run's summary file.

Locust's "Aggregated" row mixes every request type, so a page's 5 ms and a long
poll's 10 s wait land in one percentile. The summary merges Locust's own stats
entries by category instead (HTTP pages, WebSocket delivery, tasks, ...) and
writes them as ``<csv prefix>_summary.json`` beside Locust's CSV files.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import StatsEntry

logger = logging.getLogger(__name__)

# Request types of the custom events; they show as rows of these types in the HTML/CSV report.
WS_CONNECT = "WSCONNECT"
WS_DELIVER = "WSDELIVER"
WS_ERROR = "WSERROR"
TASK = "TASK"
POLL_DELIVER = "LPDELIVER"
TASK_E2E = "task e2e"
TASK_SERVER = "task queue+run"
# HTTP requests whose time is a deliberate wait, not service time.
LONG_POLL_NAME = "/poll/[room]/"

HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


def fire(
    environment: Environment,
    request_type: str,
    name: str,
    started: float,
    exception: Exception | None = None,
    length: int = 0,
    elapsed_ms: float | None = None,
) -> None:
    """Report one custom event to Locust.

    Its response time is ``elapsed_ms`` when given, else the age of ``started`` (a ``time.time()``).
    """
    if elapsed_ms is None:
        elapsed_ms = (time.time() - started) * 1000.0
    environment.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=max(elapsed_ms, 0.0),
        response_length=length,
        exception=exception,
        context={},
    )


def category(request_type: str, name: str) -> str | None:
    """The summary category of a stats row, or None for rows the summary leaves out."""
    if request_type in HTTP_METHODS:
        return "long-poll wait" if name == LONG_POLL_NAME else "http"
    if request_type == TASK:
        return "task queue+run" if name == TASK_SERVER else "task e2e"
    return {
        WS_DELIVER: "ws delivery",
        WS_CONNECT: "ws connect",
        WS_ERROR: "ws errors",
        POLL_DELIVER: "long-poll delivery",
    }.get(request_type)


def summarize_entry(entry: StatsEntry) -> dict[str, Any]:
    """The figures of one (merged) stats entry."""
    has = entry.num_requests > 0
    return {
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "rps": round(entry.total_rps, 2),
        "p50_ms": entry.get_response_time_percentile(0.50) if has else None,
        "p95_ms": entry.get_response_time_percentile(0.95) if has else None,
        "p99_ms": entry.get_response_time_percentile(0.99) if has else None,
        "max_ms": round(entry.max_response_time, 1) if has else None,
    }


def build_summary(environment: Environment) -> dict[str, Any]:
    """Figures per category and per row, from the runner's stats (all workers' in distributed mode)."""
    stats = environment.runner.stats if environment.runner else environment.stats
    merged: dict[str, StatsEntry] = {}
    rows = []
    for (name, method), entry in sorted(stats.entries.items()):
        rows.append({"type": method, "name": name} | summarize_entry(entry))
        key = category(method, name)
        if key is None:
            continue
        if key not in merged:
            merged[key] = StatsEntry(stats, key, "", use_response_times_cache=False)
        merged[key].extend(entry)
    total = stats.total
    errors = [
        {"type": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
        for e in stats.errors.values()
    ]
    options = environment.parsed_options
    return {
        "scenario": os.environ.get("SCENARIO", "mixed"),
        # The project's description (LOADTEST_SPEC, as the user named it); None: the demo's scenarios.
        "spec": (os.environ.get("LOADTEST_SPEC_SOURCE") or os.environ.get("LOADTEST_SPEC")) or None,
        "host": environment.host,
        "users": getattr(options, "num_users", None),
        "spawn_rate": getattr(options, "spawn_rate", None),
        "run_time_s": getattr(options, "run_time", None),
        "duration_s": round((total.last_request_timestamp or time.time()) - total.start_time, 1),
        "total": summarize_entry(total),
        "categories": {key: summarize_entry(entry) for key, entry in sorted(merged.items())},
        "rows": rows,
        "errors": errors,
        "versions": {
            "locust": version("locust"),
            "websocket-client": version("websocket-client"),
            "python": platform.python_version(),
        },
        "cpu_count": os.cpu_count(),
    }


@events.test_stop.add_listener
def write_summary(environment: Environment, **_kwargs: Any) -> None:
    """After the run, write ``<csv prefix>_summary.json`` (only where the stats are: master or local)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    path = Path(f"{prefix}_summary.json")
    path.write_text(json.dumps(build_summary(environment), indent=2) + "\n")
    logger.info("summary written to %s", path)
