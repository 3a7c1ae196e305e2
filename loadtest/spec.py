"""The description of a project's load test (LOADTEST_SPEC, a TOML file; loadtest/README.md).

    python spec.py check FILE [--display PATH] [--scenario NAMES]
        validate FILE, print what the generic scenarios will do; exit 2 with the reason when
        FILE (shown as PATH) or SCENARIO is wrong

Standard library only (tomllib: Python >= 3.11), so the check runs before Locust starts.
The generic scenarios (scenarios/project.py) read the same file through ``load``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOM = "{room}"
TOKEN = "{token}"
EXPECTS = ("echo", "broadcast")
# Scenario names with a description; `mixed` is every part the description has.
PAGES_SCENARIO = "project-pages"
WS_SCENARIO = "project-ws"
SCENARIOS = (PAGES_SCENARIO, WS_SCENARIO, "mixed")
# Bounds: no description makes a run unbounded or a socket wait forever.
MAX_THINK = 600.0
MAX_WEIGHT = 1000
MAX_ROOM = 1000
MAX_MESSAGE = 65536
TOP_KEYS = ("host", "origin", "pages", "websocket")
PAGES_KEYS = ("paths", "weight", "think_time")
PATH_KEYS = ("path", "weight", "status", "name")
SOCKET_KEYS = (
    "name",
    "path",
    "send",
    "expect",
    "include_sender",
    "room_size",
    "think_time",
    "weight",
    "delivery_timeout",
)
STATUS_CLASS = re.compile(r"^[1-5]xx$")


class SpecError(ValueError):
    """A description that cannot run: names the file, the key, the value and what is allowed."""


@dataclass(frozen=True)
class Page:
    """One path to fetch: its template (``{room}`` allowed), weight, accepted statuses, report name."""

    path: str
    weight: int
    status: frozenset[int]
    status_text: str
    name: str


@dataclass(frozen=True)
class Socket:
    """One WebSocket part: where to connect, what to send, who must get it back."""

    index: int
    name: str
    path: str
    send: str
    expect: str
    include_sender: bool
    room_size: int
    think_time: tuple[float, float]
    weight: int
    delivery_timeout: float | None

    @property
    def connect_name(self) -> str:
        """The WSCONNECT row: the path with ``[room]`` for the placeholder."""
        return report_name(self.path)

    def recipients(self) -> str:
        """Who must receive each message, in words."""
        if self.expect == "echo":
            return "the sender"
        who = "every member" if self.include_sender else "every other member"
        return f"{who} of its room of {self.room_size}"


@dataclass(frozen=True)
class Spec:
    """A validated description."""

    source: str
    host: str | None
    origin: str | None
    pages: tuple[Page, ...]
    pages_weight: int
    pages_think_time: tuple[float, float]
    sockets: tuple[Socket, ...]

    def scenarios(self) -> tuple[str, ...]:
        """The scenarios this description can run (``mixed`` always)."""
        names = [PAGES_SCENARIO] if self.pages else []
        if self.sockets:
            names.append(WS_SCENARIO)
        return (*names, "mixed")

    def describe(self) -> list[str]:
        """What the generic scenarios will do, one line per part."""
        lines = []
        if self.pages:
            paths = ", ".join(f"{p.path} (x{p.weight}, {p.status_text})" for p in self.pages)
            low, high = self.pages_think_time
            think = f"think {low:g}-{high:g} s, weight {self.pages_weight}"
            lines.append(f"{PAGES_SCENARIO}: GET {paths}; {think}")
        for socket in self.sockets:
            low, high = socket.think_time
            lines.append(
                f"{WS_SCENARIO}: {socket.name}: {socket.path}, send {socket.send!r}, {socket.expect} to "
                f"{socket.recipients()}; think {low:g}-{high:g} s, weight {socket.weight}"
            )
        return lines


def report_name(path: str) -> str:
    """A path template as a report row: ``/ws/chat/{room}/`` -> ``/ws/chat/[room]/``."""
    return path.replace(ROOM, "[room]")


class _Checker:
    """Validation helpers that name the file and the key in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, value: Any, allowed: str) -> SpecError:
        return SpecError(f"{self.source}: {key} = {value!r}: {allowed}")

    def table(self, key: str, value: Any, allowed_keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, value, "must be a table")
        unknown = sorted(set(value) - set(allowed_keys))
        if unknown:
            name = f"{key}.{unknown[0]}" if key else unknown[0]
            raise self.fail(name, value[unknown[0]], f"unknown key; allowed: {', '.join(allowed_keys)}")
        return value

    def string(self, key: str, value: Any, *, path: bool = False, limit: int = 2048) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, value, "must be a non-empty string")
        if len(value) > limit:
            raise self.fail(key, value[:40] + "...", f"must be at most {limit} characters")
        if path and (not value.startswith("/") or any(c.isspace() for c in value)):
            raise self.fail(key, value, "must be a path starting with '/', without spaces")
        return value

    def integer(self, key: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, value, f"must be an integer from {low} to {high}")
        return value

    def seconds(self, key: str, value: Any, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise self.fail(key, value, f"must be a number of seconds from {low:g} to {high:g}")
        return float(value)

    def think_time(self, key: str, value: Any) -> tuple[float, float]:
        allowed = f"must be [low, high] in seconds, 0 <= low <= high <= {MAX_THINK:g}"
        if not isinstance(value, list) or len(value) != 2:
            raise self.fail(key, value, allowed)
        low, high = (self.seconds(key, v, 0.0, MAX_THINK) for v in value)
        if low > high:
            raise self.fail(key, value, allowed)
        return low, high

    def status(self, key: str, value: Any) -> tuple[frozenset[int], str]:
        """An HTTP status, a class like ``"4xx"``, or a list of those."""
        allowed = 'must be a status (200), a class ("2xx") or a list of those (["2xx", 304])'
        items = value if isinstance(value, list) else [value]
        codes: set[int] = set()
        if not items:
            raise self.fail(key, value, allowed)
        for item in items:
            if isinstance(item, str) and STATUS_CLASS.match(item):
                first = int(item[0]) * 100
                codes.update(range(first, first + 100))
            elif isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
                codes.add(item)
            else:
                raise self.fail(key, value, allowed)
        return frozenset(codes), " or ".join(str(item) for item in items)


def _page(check: _Checker, key: str, value: Any) -> Page:
    if isinstance(value, str):
        value = {"path": value}
    entry = check.table(key, value, PATH_KEYS)
    if "path" not in entry:
        raise check.fail(key, value, "needs a path (a string, or a table with path = ...)")
    path = check.string(f"{key}.path", entry["path"], path=True)
    status, status_text = check.status(f"{key}.status", entry.get("status", 200))
    return Page(
        path=path,
        weight=check.integer(f"{key}.weight", entry.get("weight", 1), 1, MAX_WEIGHT),
        status=status,
        status_text=status_text,
        name=check.string(f"{key}.name", entry.get("name", report_name(path)), limit=200),
    )


def _socket(check: _Checker, key: str, value: Any, index: int) -> Socket:
    entry = check.table(key, value, SOCKET_KEYS)
    for required in ("path", "send"):
        if required not in entry:
            raise check.fail(key, value, f"needs {required} (required keys: path, send)")
    path = check.string(f"{key}.path", entry["path"], path=True)
    send = check.string(f"{key}.send", entry["send"], limit=MAX_MESSAGE)
    if TOKEN not in send:
        why = "the unique text the scenario looks for in what comes back"
        raise check.fail(f"{key}.send", send, f"must contain {TOKEN}: {why}")
    expect = entry.get("expect", "broadcast")
    if expect not in EXPECTS:
        raise check.fail(f"{key}.expect", expect, f"allowed: {' or '.join(EXPECTS)}")
    include_sender = entry.get("include_sender", True)
    if not isinstance(include_sender, bool):
        raise check.fail(f"{key}.include_sender", include_sender, "must be true or false")
    default_size = 1 if expect == "echo" else 5
    room_size = check.integer(f"{key}.room_size", entry.get("room_size", default_size), 1, MAX_ROOM)
    if expect == "broadcast":
        if ROOM not in path:
            raise check.fail(
                f"{key}.path", path, f"must contain {ROOM} with expect = 'broadcast' (each room is one group)"
            )
        if room_size < 2 and not include_sender:
            why = "must be at least 2 when the sender does not get its own message"
            raise check.fail(f"{key}.room_size", room_size, why)
    timeout = entry.get("delivery_timeout")
    if timeout is not None:
        timeout = check.seconds(f"{key}.delivery_timeout", timeout, 1, 120)
    return Socket(
        index=index,
        name=check.string(f"{key}.name", entry.get("name", f"{expect} {report_name(path)}"), limit=200),
        path=path,
        send=send,
        expect=expect,
        include_sender=include_sender,
        room_size=room_size,
        think_time=check.think_time(f"{key}.think_time", entry.get("think_time", [3, 10])),
        weight=check.integer(f"{key}.weight", entry.get("weight", 1), 1, MAX_WEIGHT),
        delivery_timeout=timeout,
    )


def parse(data: dict[str, Any], source: str) -> Spec:
    """A Spec from parsed TOML; SpecError names what is wrong."""
    check = _Checker(source)
    check.table("", data, TOP_KEYS)
    host = data.get("host")
    origin = data.get("origin")
    if host is not None:
        check.string("host", host, limit=255)
    if origin is not None and (not isinstance(origin, str) or not re.match(r"^https?://\S+$", origin)):
        raise check.fail("origin", origin, "must be an http:// or https:// origin, e.g. 'http://localhost'")
    pages: tuple[Page, ...] = ()
    pages_weight, pages_think = 1, (2.0, 8.0)
    if "pages" in data:
        table = check.table("pages", data["pages"], PAGES_KEYS)
        paths = table.get("paths")
        if not isinstance(paths, list) or not paths:
            raise check.fail("pages.paths", paths, "must be a non-empty list of paths or {path = ...} tables")
        pages = tuple(_page(check, f"pages.paths[{i}]", value) for i, value in enumerate(paths))
        pages_weight = check.integer("pages.weight", table.get("weight", 1), 1, MAX_WEIGHT)
        pages_think = check.think_time("pages.think_time", table.get("think_time", [2, 8]))
    sockets: tuple[Socket, ...] = ()
    if "websocket" in data:
        raw = data["websocket"]
        if isinstance(raw, list):
            if not raw:
                raise check.fail("websocket", raw, "must be a table ([websocket]) or tables ([[websocket]])")
            sockets = tuple(_socket(check, f"websocket[{i}]", value, i) for i, value in enumerate(raw))
        else:
            sockets = (_socket(check, "websocket", raw, 0),)
        names = [s.name for s in sockets]
        if len(set(names)) != len(names):
            raise check.fail("websocket.name", names, "each [[websocket]] needs a name of its own")
    if not pages and not sockets:
        raise SpecError(f"{source}: nothing to do: add [pages] paths = [...] and/or a [websocket] table")
    return Spec(source, host, origin, pages, pages_weight, pages_think, sockets)


def load(path: str | Path, display: str | None = None) -> Spec:
    """Read and validate a description; SpecError names the file (as ``display``) and the problem."""
    source = display or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{source}: cannot read the load-test description: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"{source}: not UTF-8 text: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: not valid TOML: {exc}") from exc
    return parse(data, source)


def check_scenarios(spec: Spec, value: str) -> list[str]:
    """The scenario names of SCENARIO that this description runs; SpecError for the others."""
    names = [part.strip() for part in value.split(",") if part.strip()] or ["mixed"]
    for name in names:
        if name not in spec.scenarios():
            choices = ", ".join(spec.scenarios())
            why = " (the description has no [websocket])" if name == WS_SCENARIO else ""
            why = " (the description has no [pages])" if name == PAGES_SCENARIO else why
            raise SpecError(
                f"SCENARIO = {name!r}: not a scenario of {spec.source}{why}; with LOADTEST_SPEC choose "
                f"from: {choices} (the demo's scenarios run without LOADTEST_SPEC)"
            )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a description and print what it runs")
    check.add_argument("file", type=Path)
    check.add_argument("--display", help="the file as the user names it (a host path)")
    check.add_argument("--scenario", help="SCENARIO to check against the description")
    args = parser.parse_args(argv)
    try:
        spec = load(args.file, args.display)
        if args.scenario is not None:
            check_scenarios(spec, args.scenario)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(spec.describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
