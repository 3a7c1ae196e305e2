"""The package's layout (issue #30): arrows only downward, and maps that match.

Every module of app/channels_kit is parsed with ``ast`` (nothing is imported) into an import
graph: module-level and function-level (lazy) imports alike, ``from x import y`` counted as
an import of the submodule ``x.y`` when there is one (else of ``x``), relative imports
resolved. Imports under ``if TYPE_CHECKING:`` are counted too: a type from above is named
with a Protocol below, not with an import (``relay.websocket.SocketHost``,
``layers.redis.outages.ShardedLayer``). Imports by string (``import_string``, settings)
are not seen. The checks:

- no import cycle among modules;
- no two subpackages of ``channels_kit`` importing each other (the modules at the package
  root are outside this rule);
- the root's opening docstring lists its modules and subpackages from the bottom up, and
  each imports only from those listed before it;
- every package's opening docstring lists every module and subpackage it has, and nothing
  else, one ``- ``name``: ...`` line each.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "app" / "channels_kit"


class Package:
    """The modules of a package directory, and the import graph among them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = root.name
        self.paths: dict[str, Path] = {}
        self.packages: set[str] = set()
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
                self.packages.add(".".join(parts))
            self.paths[".".join(parts)] = path
        self.graph = {module: self._imports(module) for module in self.paths}

    def _resolve(self, name: str) -> str | None:
        """The module ``name`` is, or the nearest package or module it is inside."""
        while name and name not in self.paths:
            name = name.rpartition(".")[0]
        return name or None

    def _imports(self, module: str) -> set[str]:
        tree = ast.parse(self.paths[module].read_text(), str(self.paths[module]))
        named: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                named.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = self._absolute(module, node)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    named.add(full if full in self.paths else base)
        found = {self._resolve(name) for name in named if name.split(".")[0] == self.name}
        return {target for target in found if target and target != module}

    def _absolute(self, module: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = module.split(".") if module in self.packages else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join([*parts, *([node.module] if node.module else [])])

    def cycles(self) -> list[list[str]]:
        """One cycle (first module repeated at the end) per strongly connected component."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        components: list[list[str]] = []

        def visit(node: str) -> None:
            index[node] = low[node] = len(index)
            stack.append(node)
            on_stack.add(node)
            for target in sorted(self.graph[node]):
                if target not in index:
                    visit(target)
                    low[node] = min(low[node], low[target])
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

        for node in sorted(self.graph):
            if node not in index:
                visit(node)
        return [self._cycle_in(set(component)) for component in components]

    def _cycle_in(self, component: set[str]) -> list[str]:
        """A shortest way from the component's first module back to itself."""
        start = min(component)
        paths = {start: [start]}
        frontier = [start]
        while frontier:
            following = []
            for node in frontier:
                for target in sorted(self.graph[node] & component):
                    if target == start:
                        return [*paths[node], start]
                    if target not in paths:
                        paths[target] = [*paths[node], target]
                        following.append(target)
            frontier = following
        raise AssertionError(f"no cycle through {start}")

    def unit(self, module: str) -> str | None:
        """``<package>.X`` for a module of the subpackage X (or X itself), None at the root."""
        parts = module.split(".")
        if len(parts) < 2:
            return None
        top = ".".join(parts[:2])
        return top if top in self.packages else None

    def top(self, module: str) -> str | None:
        """``<package>.X`` for the root's module or subpackage X that holds ``module``."""
        parts = module.split(".")
        return ".".join(parts[:2]) if len(parts) >= 2 else None

    def edges(self, level) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """Imports between the units that ``level`` names, with the module imports behind them."""
        found: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for module, targets in sorted(self.graph.items()):
            for target in sorted(targets):
                a, b = level(module), level(target)
                if a and b and a != b:
                    found[(a, b)].append((module, target))
        return found

    def listed(self, package: str) -> list[str]:
        """The names of a package's docstring's bullet lines (``- ``name``: ...``), in order."""
        doc = ast.get_docstring(ast.parse(self.paths[package].read_text())) or ""
        names = []
        for line in doc.splitlines():
            match = re.match(r"\s*- (.*?):(\s|$)", line)
            if match:
                names.extend(re.findall(r"``(\w+)``", match.group(1)))
        return names

    def children(self, package: str) -> set[str]:
        """The last name of each module and subpackage directly in ``package``."""
        depth = package.count(".") + 1
        return {
            module.rpartition(".")[2]
            for module in self.paths
            if module.startswith(package + ".") and module.count(".") == depth
        }


PACKAGE = Package(SOURCE)


def test_the_graph_sees_the_package():
    """A check that finds nothing because it read nothing would pass: it read the package."""
    assert "channels_kit.worker.server" in PACKAGE.graph
    assert "channels_kit.observe.worker_state" in PACKAGE.graph["channels_kit.worker.server"]
    # A lazy import, inside a function.
    assert "channels_kit.observe.metrics" in PACKAGE.graph["channels_kit.management.commands.runworker"]


def test_no_import_cycle_among_modules():
    cycles = PACKAGE.cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_two_subpackages_import_each_other():
    edges = PACKAGE.edges(PACKAGE.unit)
    both_ways = [
        f"{a} -> {b} ({', '.join(f'{m} -> {t}' for m, t in found[:3])}); "
        f"back: {', '.join(f'{m} -> {t}' for m, t in edges[(b, a)][:3])}"
        for (a, b), found in sorted(edges.items())
        if (b, a) in edges and a < b
    ]
    assert not both_ways, "subpackages importing each other:\n" + "\n".join(both_ways)


def test_the_root_lists_its_parts_from_the_bottom_up():
    order = [f"{PACKAGE.name}.{name}" for name in PACKAGE.listed(PACKAGE.name)]
    upward = [
        f"{a} (listed {order.index(a) + 1}.) imports {b} (listed {order.index(b) + 1}.): {found[0]}"
        for (a, b), found in sorted(PACKAGE.edges(PACKAGE.top).items())
        if a in order and b in order and order.index(b) > order.index(a)
    ]
    assert not upward, "imports upward in the channels_kit docstring's order:\n" + "\n".join(upward)


def test_every_package_docstring_lists_its_modules():
    wrong = []
    for package in sorted(PACKAGE.packages):
        listed, present = PACKAGE.listed(package), PACKAGE.children(package)
        if set(listed) != present or len(listed) != len(set(listed)):
            missing, extra = sorted(present - set(listed)), sorted(set(listed) - present)
            wrong.append(f"{package}: not listed {missing}, listed but absent {extra}, listed {listed}")
    assert not wrong, "package docstrings that do not match their modules:\n" + "\n".join(wrong)
