"""Container healthchecks with nothing but the standard library.

    python -m channels_kit.observe.probe http http://127.0.0.1:8000/healthz
    python -m channels_kit.observe.probe heartbeat /tmp/channels-kit/worker.heartbeat --max-age 30

Exit 0 when healthy, 1 (with the reason on stderr) when not.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from pathlib import Path


def probe_http(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 2xx within ``timeout``, else the reason."""
    request = urllib.request.Request(url, headers={"Host": "localhost"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if 200 <= response.status < 300:
                return None
            return f"{url} answered {response.status}"
    except OSError as exc:
        return f"{url}: {exc}"


def probe_heartbeat(path: Path, max_age: float) -> str | None:
    """None when ``path`` was touched less than ``max_age`` seconds ago, else the reason."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return f"{path} does not exist (the worker has not started serving)"
    if age > max_age:
        return f"{path} is {age:.0f}s old (limit {max_age:.0f}s): the worker loop is stuck"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one probe; the exit status is the verdict."""
    parser = argparse.ArgumentParser(prog="python -m channels_kit.observe.probe", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    http = sub.add_parser("http", help="GET a URL and expect 2xx")
    http.add_argument("url")
    http.add_argument("--timeout", type=float, default=3.0)
    beat = sub.add_parser("heartbeat", help="check that a worker's heartbeat file is fresh")
    beat.add_argument("path", type=Path)
    beat.add_argument("--max-age", type=float, default=30.0)
    args = parser.parse_args(argv)

    if args.kind == "http":
        problem = probe_http(args.url, args.timeout)
    else:
        problem = probe_heartbeat(args.path, args.max_age)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
