"""The one list of the variables the package reads (``channels_kit.variables.VARIABLES``): every
variable its modules read is in it, with the default the code applies, and
docs/package-variables.md is the table generated from it.

The package is read as installed (its modules' source, parsed), so whatever the wheel
holds is checked, the project overlay included.
"""

from __future__ import annotations

import ast
import operator
from pathlib import Path

import pytest

import channels_kit
from channels_kit import variables

PACKAGE = Path(channels_kit.__file__).parent
# The functions that read a variable, and the position of the variable's name in their call.
READERS = {
    "env_secret": 0,
    "env_str": 0,
    "env_int": 0,
    "env_float": 0,
    "env_bool": 0,
    "env_list": 0,
    "host_name": 0,
}
READERS_OF_NAMES = {"option_or_env": 1, "split_globs": 1}  # (value, env name, default...)
NO_DEFAULT = object()
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
# How a module reads the environment without a helper.
ENVIRON_GETS = ("os.environ.get", "environ.get", "os.getenv")


def doc(name: str) -> Path:
    """A document of the kit's docs/: beside the tests in the test image, else the checkout's."""
    for docs in (Path(__file__).resolve().parents[1] / "docs", Path(__file__).resolve().parents[2] / "docs"):
        if (docs / name).exists():
            return docs / name
    pytest.fail(f"docs/{name} is neither in the test image nor in a checkout")


def module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    """Module-level ``NAME = <expr>`` assignments."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = node.value
    return found


def parse_package() -> dict[str, tuple[ast.Module, dict[str, ast.expr]]]:
    """Every module of the package: dotted name -> (tree, its module-level constants)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(), str(path))
        modules[name] = (tree, module_constants(tree))
    return modules


def value_of(node: ast.expr | None, module: str, modules: dict) -> object:
    """The constant value of ``node``: a literal, arithmetic on literals, or a module-level
    constant of ``module`` or imported from another module of the package; else NO_DEFAULT."""
    if node is None:
        return NO_DEFAULT
    if isinstance(node, ast.Name):
        tree, constants = modules[module]
        if node.id in constants:
            return value_of(constants[node.id], module, modules)
        for statement in tree.body:
            if (
                isinstance(statement, ast.ImportFrom)
                and statement.module in modules
                and any((alias.asname or alias.name) == node.id for alias in statement.names)
            ):
                return value_of(ast.Name(node.id), statement.module, modules)
        return NO_DEFAULT
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = value_of(node.left, module, modules), value_of(node.right, module, modules)
        return NO_DEFAULT if NO_DEFAULT in (left, right) else OPERATORS[type(node.op)](left, right)
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NO_DEFAULT


def reads_in_package() -> list[tuple[str, str, object]]:
    """Every variable a module reads: (module, variable, the default given there or NO_DEFAULT)."""
    modules = parse_package()
    reads = []
    for module, (tree, _) in modules.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            function = (
                node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            )
            if function in READERS or function in READERS_OF_NAMES:
                at = READERS.get(function, READERS_OF_NAMES.get(function))
                args = node.args
                if len(args) <= at:
                    continue
                name = value_of(args[at], module, modules)
                default = value_of(args[at + 1], module, modules) if len(args) > at + 1 else NO_DEFAULT
            elif ast.unparse(node.func) in ENVIRON_GETS and node.args:
                name = value_of(node.args[0], module, modules)
                default = value_of(node.args[1], module, modules) if len(node.args) > 1 else NO_DEFAULT
            else:
                continue
            if isinstance(name, str) and name.isupper():
                reads.append((module, name, default))
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                name = value_of(node.slice, module, modules)
                if isinstance(name, str):
                    reads.append((module, name, NO_DEFAULT))
    return reads


def test_the_scan_finds_the_packages_reads():
    """The scan itself sees reads of every kind (so the test below cannot pass by finding nothing)."""
    found = {name for _, name, _ in reads_in_package()}
    assert {"REDIS_URLS", "WORKER_CONCURRENCY", "WORKER_ONLY_CHANNELS", "EVENT_LOOP", "SERVER_ROLE"} <= found
    assert {"RELAY_TIMEOUT", "ASGI_THREADS", "LOG_LEVEL", "WORKER_LAYER_WAIT_SECONDS"} <= found


def test_every_variable_the_package_reads_is_listed_with_the_default_the_code_applies():
    listed = {variable.name: variable for variable in variables.VARIABLES}
    missing, wrong = [], []
    for module, name, default in reads_in_package():
        if name not in listed:
            missing.append(f"{module} reads {name}")
            continue
        variable = listed[name]
        if default is NO_DEFAULT or default in ("", None) or variable.default_note:
            continue  # no default at the call (or a computed one, said in the note)
        if default != variable.default:
            wrong.append(f"{module}: {name} defaults to {default!r}, VARIABLES says {variable.default!r}")
    assert not missing, (
        "add these to channels_kit.variables.VARIABLES (name, default, who reads it, what it sets) and "
        f"regenerate docs/package-variables.md: {missing}"
    )
    assert not wrong, wrong


def test_every_listed_variable_is_read_and_listed_once():
    names = [variable.name for variable in variables.VARIABLES]
    assert len(names) == len(set(names)), sorted(name for name in names if names.count(name) > 1)
    read = {name for _, name, _ in reads_in_package()}
    assert not set(names) - read, f"listed but read nowhere: {sorted(set(names) - read)}"


def test_the_doc_is_the_table_of_the_list():
    text = doc("package-variables.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table == variables.variables_table().splitlines(), (
        "docs/package-variables.md is not the table of channels_kit.variables.VARIABLES: regenerate it "
        "with `python -c 'from channels_kit.variables import variables_table; print(variables_table())'`"
    )
