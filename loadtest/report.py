"""Reports of load-test runs: the short summary `make loadtest` prints, and the `make scaling` report.

    python report.py summary DIR [--display DIR]   print the summary of one run (DIR/stats_summary.json)
    python report.py scaling DIR                   write DIR/README.md, plots and scaling.csv from
                                                   DIR/points/<axis>-<size>/ and DIR/meta.json
    python report.py broadcast DIR [--limit MS]    plot DIR/results.jsonl of `make bench-broadcast`
                                                   (p95 against clients, per server) to DIR/broadcast.png

Runs in the loadtest image (matplotlib is there); the summary needs the standard library only.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SUMMARY = "stats_summary.json"
# Categories of stats_summary.json, in print order, with the label the summary shows.
LABELS = {
    "http": "HTTP requests",
    "ws delivery": "WebSocket delivery",
    "ws connect": "WebSocket connect",
    "task e2e": "tasks, end to end",
    "task queue+run": "tasks, queue+run",
    "long-poll delivery": "long-poll delivery",
    "long-poll wait": "long-poll wait",
    "ws errors": "WebSocket errors",
}


def load_summary(directory: Path) -> dict[str, Any]:
    path = directory / SUMMARY
    if not path.is_file():
        raise SystemExit(f"{path}: missing (did Locust run with --csv {directory}/stats?)")
    return json.loads(path.read_text())


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def summary_lines(summary: dict[str, Any], display: str) -> list[str]:
    """The short summary of one run: totals, then one line per category."""
    total = summary["total"]
    failures = total["failures"]
    share = 100.0 * failures / total["requests"] if total["requests"] else 0.0
    described = f" from {summary['spec']}" if summary.get("spec") else ""
    lines = [
        f"scenario {summary['scenario']}{described}, {summary['users']} users "
        f"(spawn {summary['spawn_rate']}/s), "
        f"{summary['duration_s']:g} s against {summary['host']}",
        f"total: {total['requests']:,} requests and events, {total['rps']:,.1f}/s, "
        f"failures {failures:,} ({share:.2f} %)",
        "",
        f"{'':22} {'count':>8} {'per s':>8} {'fail':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}",
    ]
    categories = summary["categories"]
    for key, label in LABELS.items():
        row = categories.get(key)
        if row is None:
            continue
        lines.append(
            f"{label:22} {row['requests']:>8,} {row['rps']:>8,.1f} {row['failures']:>6,} "
            f"{fmt_ms(row['p50_ms']):>8} {fmt_ms(row['p95_ms']):>8} {fmt_ms(row['p99_ms']):>8}"
        )
        if key == "ws delivery":
            for sub in (r for r in summary["rows"] if r["type"] == "WSDELIVER"):
                lines.append(
                    f"  {sub['name']:20} {sub['requests']:>8,} {sub['rps']:>8,.1f} {sub['failures']:>6,} "
                    f"{fmt_ms(sub['p50_ms']):>8} {fmt_ms(sub['p95_ms']):>8} {fmt_ms(sub['p99_ms']):>8}"
                )
    for error in summary["errors"][:5]:
        lines.append(f"  error x{error['occurrences']}: {error['type']} {error['name']}: {error['error']}")
    lines += ["", f"report: {display}/report.html  (CSV: {display}/stats_*.csv)"]
    return lines


# --- scaling ---------------------------------------------------------------------------------------

# What each axis measures: the stats row of its throughput and latency, and their units.
AXES: dict[str, dict[str, str]] = {
    "workers": {
        "title": "background tasks vs `worker` replicas",
        "scenario": "tasks",
        "type": "task queue+run",
        "name": "",
        "unit": "tasks/s",
        "latency": "task latency, created -> finished (queue wait + run)",
        "x": "worker replicas",
    },
    "io": {
        "title": "the 50 ms endpoint vs `worker` replicas (relay mode)",
        "scenario": "io",
        "type": "http",
        "name": "",
        "unit": "requests/s",
        "latency": "HTTP response time",
        "x": "worker replicas",
    },
    "daphne": {
        "title": "HTTP pages vs Daphne replicas",
        "scenario": "pages",
        "type": "http",
        "name": "",
        "unit": "requests/s",
        "latency": "HTTP response time",
        "x": "Daphne replicas",
    },
    "shards": {
        "title": "WebSocket fan-out vs Redis shards",
        "scenario": "fanout",
        "type": "ws delivery",
        "name": "",
        "unit": "deliveries/s",
        "latency": "WebSocket delivery latency, send -> every other member of the room",
        "x": "Redis shards",
        # The offered load is fixed (think times): throughput stays put, latency tells.
        "fixed_load": "yes",
    },
}


@dataclass
class Point:
    """One bounded run of the scaling report."""

    axis: str
    size: int
    scenario: str
    users: int
    duration_s: float
    throughput: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    count: int
    failures: int
    all_failures: int


def point_from(axis: str, size: int, summary: dict[str, Any]) -> Point:
    """The axis's figures from one run's summary."""
    spec = AXES[axis]
    if spec["type"] in summary["categories"]:
        row = summary["categories"][spec["type"]]
    else:
        row = next(
            (r for r in summary["rows"] if r["type"] == spec["type"] and r["name"] == spec["name"]),
            {"requests": 0, "failures": 0, "rps": 0.0, "p50_ms": None, "p95_ms": None, "p99_ms": None},
        )
    return Point(
        axis=axis,
        size=size,
        scenario=summary["scenario"],
        users=summary["users"],
        duration_s=summary["duration_s"],
        throughput=row["rps"],
        p50_ms=row["p50_ms"],
        p95_ms=row["p95_ms"],
        p99_ms=row["p99_ms"],
        count=row["requests"],
        failures=row["failures"],
        all_failures=summary["total"]["failures"],
    )


def collect_points(directory: Path) -> list[Point]:
    points = []
    for path in sorted((directory / "points").glob("*-*")):
        axis, _, size = path.name.rpartition("-")
        if axis in AXES and size.isdigit() and (path / SUMMARY).is_file():
            points.append(point_from(axis, int(size), load_summary(path)))
    return sorted(points, key=lambda p: (list(AXES).index(p.axis), p.size))


def ratio(points: list[Point], high: int, low: int) -> float | None:
    """Throughput at ``high`` over throughput at ``low`` (None when either is missing or zero)."""
    by_size = {p.size: p.throughput for p in points}
    if by_size.get(low) and high in by_size:
        return by_size[high] / by_size[low]
    return None


def plot_axis(directory: Path, axis: str, points: list[Point]) -> str:
    """Two side-by-side plots (throughput, p99) against the axis; the PNG's file name."""
    import matplotlib  # only the scaling report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = AXES[axis]
    sizes = [p.size for p in points]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    left.plot(sizes, [p.throughput for p in points], marker="o", label="measured")
    if points[0].throughput:
        base = points[0].throughput / points[0].size
        linear = [base * s for s in sizes]
        left.plot(sizes, linear, linestyle="--", color="grey", label="linear from the first")
    left.set(xlabel=spec["x"], ylabel=spec["unit"], title=f"throughput ({spec['unit']})")
    left.set_xticks(sizes)
    left.set_ylim(bottom=0)
    left.legend()
    right.plot(sizes, [p.p99_ms or 0 for p in points], marker="o", color="tab:red", label="p99")
    right.plot(sizes, [p.p50_ms or 0 for p in points], marker=".", color="tab:orange", label="p50")
    right.set(xlabel=spec["x"], ylabel="ms", title="latency")
    right.set_xticks(sizes)
    right.set_ylim(bottom=0)
    right.legend()
    figure.suptitle(spec["title"].replace("`", ""))
    figure.tight_layout()
    name = f"{axis}.png"
    figure.savefig(directory / name)
    plt.close(figure)
    return name


def headline(axis: str, points: list[Point]) -> str:
    """One sentence: first and last point, and their throughput ratio."""
    spec = AXES[axis]
    first, last = points[0], points[-1]
    if spec.get("fixed_load") and len(points) > 1:
        return (
            f"**{spec['title']}**, at a fixed offered load (~{first.throughput:,.0f} {spec['unit']}): "
            f"p50 {fmt_ms(first.p50_ms)} -> {fmt_ms(last.p50_ms)} ms, "
            f"p99 {fmt_ms(first.p99_ms)} -> {fmt_ms(last.p99_ms)} ms from {first.size} to {last.size} "
            f"{spec['x']}."
        )
    if len(points) == 1:
        return (
            f"**{spec['title']}**: {first.throughput:,.1f} {spec['unit']} at {first.size}, "
            f"p99 {fmt_ms(first.p99_ms)} ms (one point)."
        )
    text = (
        f"**{spec['title']}**: {first.throughput:,.1f} {spec['unit']} at {first.size}, "
        f"{last.throughput:,.1f} at {last.size}"
    )
    measured = ratio(points, last.size, first.size)
    if measured is not None and last.size != first.size:
        text += f": **{measured:.2f}x** for {last.size / first.size:g}x the {spec['x']}"
    text += f"; p99 {fmt_ms(first.p99_ms)} ms -> {fmt_ms(last.p99_ms)} ms."
    failures = sum(p.all_failures for p in points)
    if failures:
        text += f" {failures:,} failed requests or events over these runs (see each point's report)."
    return text


def write_scaling(directory: Path) -> Path:
    """Write README.md, one PNG per axis and scaling.csv into ``directory``."""
    meta = json.loads((directory / "meta.json").read_text())
    points = collect_points(directory)
    if not points:
        raise SystemExit(f"{directory}/points: no finished runs")
    with (directory / "scaling.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(asdict(points[0])))
        writer.writeheader()
        writer.writerows(asdict(p) for p in points)
    axes = {axis: [p for p in points if p.axis == axis] for axis in AXES}
    axes = {axis: pts for axis, pts in axes.items() if pts}
    plots = {axis: plot_axis(directory, axis, pts) for axis, pts in axes.items()}

    lines = [f"# Scaling report, {meta['date']}", "", "## Summary", ""]
    lines += [f"- {headline(axis, pts)}" for axis, pts in axes.items()]
    lines += [
        "",
        f"Measured on {meta['machine']['cpus']} CPU cores, where the load generator (Locust), nginx, "
        "Daphne, the workers, Redis and PostgreSQL all share the same cores: on a 2-core machine the "
        "figures show where the deployment stops scaling on that machine, not what more hardware gives. "
        "Compare points within one report; absolute figures drift between runs.",
        "",
        "## Method",
        "",
        f"A stack of its own (compose project `{meta['project']}`, removed afterwards), then, for each "
        "point, the service scaled with `docker compose up --scale` (shards: the app services recreated "
        "with the new `REDIS_URLS`), all replicas healthy, a short settle, then one bounded headless Locust "
        "run in a container on the stack's network against `http://nginx:8080`:",
        "",
    ]
    for axis in axes:
        spec = AXES[axis]
        run = meta["axes"].get(axis, {})
        lines.append(
            f"- **{axis}** ({spec['x']} {', '.join(str(p.size) for p in axes[axis])}): scenario "
            f"`{spec['scenario']}`, {run.get('users')} users spawned at {run.get('spawn_rate')}/s, "
            f"{run.get('duration')} per point, {run.get('notes', '')}. Throughput is {spec['unit']} over "
            f"the run; latency is the {spec['latency']}."
        )
    lines += ["", "## Versions", ""]
    lines += [f"- {key}: {value}" for key, value in meta["versions"].items()]
    lines += ["", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in meta["machine"].items()]
    lines += ["", "## Results", ""]
    for axis, pts in axes.items():
        spec = AXES[axis]
        lines += [
            f"### {spec['title']}",
            "",
            f"| {spec['x']} | {spec['unit']} | vs first | p50 ms | p95 ms | p99 ms | count | failures |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for p in pts:
            vs = ratio(pts, p.size, pts[0].size)
            lines.append(
                f"| {p.size} | {p.throughput:,.1f} | {'-' if vs is None else f'{vs:.2f}x'} | "
                f"{fmt_ms(p.p50_ms)} | {fmt_ms(p.p95_ms)} | {fmt_ms(p.p99_ms)} | {p.count:,} | "
                f"{p.all_failures:,} |"
            )
        lines += ["", f"![{spec['title']}]({plots[axis]})", ""]
    lines += [
        "## Raw data",
        "",
        "- `scaling.csv`: one row per point (the table above).",
        "- `points/<axis>-<size>/`: each run's Locust HTML report, CSV stats (`stats_stats.csv`, "
        "`stats_stats_history.csv`, `stats_failures.csv`) and `stats_summary.json`.",
        "",
    ]
    readme = directory / "README.md"
    readme.write_text("\n".join(lines))
    return readme


def plot_broadcast(directory: Path, limit_ms: float) -> Path:
    """p95 (send to last receipt) against the client count, a line per server; the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = (directory / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    for target in dict.fromkeys(row["target"] for row in rows):
        steps = [row for row in rows if row["target"] == target]
        axes.plot([r["clients"] for r in steps], [r["p95_ms"] for r in steps], marker="o", label=target)
    axes.axhline(limit_ms, linestyle="--", color="grey", label=f"limit {limit_ms:g} ms")
    axes.set(
        xscale="log",
        xlabel="clients (log scale)",
        ylabel="p95 ms, send to last receipt",
        title="Broadcast, websocket-shootout method: 4 broadcasts in flight",
    )
    ticks = sorted({row["clients"] for row in rows})
    axes.set_xticks(ticks, [f"{n:,}" for n in ticks], rotation=45)
    axes.minorticks_off()
    axes.set_ylim(bottom=0, top=max(3 * limit_ms, min(max(r["p95_ms"] for r in rows), 6 * limit_ms)))
    axes.legend()
    figure.tight_layout()
    path = directory / "broadcast.png"
    figure.savefig(path)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="print the summary of one run")
    summary.add_argument("directory", type=Path)
    summary.add_argument("--display", help="the directory as the user sees it (host path)")
    scaling = commands.add_parser("scaling", help="write the scaling report")
    scaling.add_argument("directory", type=Path)
    broadcast = commands.add_parser("broadcast", help="plot a broadcast benchmark's results")
    broadcast.add_argument("directory", type=Path)
    broadcast.add_argument("--limit", type=float, default=500.0, help="the p95 limit in ms (a line)")
    args = parser.parse_args(argv)
    if args.command == "summary":
        print("\n".join(summary_lines(load_summary(args.directory), args.display or str(args.directory))))
        return 0
    if args.command == "broadcast":
        print(plot_broadcast(args.directory, args.limit))
        return 0
    readme = write_scaling(args.directory)
    print(readme.read_text().split("## Method")[0].rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
