"""What a Django project directory holds, read without importing it (standard library only).

Run on the host before an image is built (``scripts/stage-project``) and inside images:

    python -m channels_kit.project.discover DIR                # JSON: settings module, dependencies
    python -m channels_kit.project.discover DIR --requirements # the dependencies as requirement lines
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

# Where the settings module can come from, in order: DJANGO_SETTINGS_MODULE, then manage.py.
SETTINGS_VARIABLE = "DJANGO_SETTINGS_MODULE"
REQUIREMENTS_VARIABLE = "PROJECT_REQUIREMENTS"
# Lock files first (they pin everything), then the usual requirement files, then pyproject.
LOCK_FILES = ("poetry.lock", "Pipfile.lock", "uv.lock")
REQUIREMENT_FILES = ("requirements.txt", "requirements/production.txt", "requirements/prod.txt")
OVERLAY_SETTINGS = "channels_kit.project.settings"
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class ProjectError(Exception):
    """The directory is not a project the kit can deploy; the message says what was looked for."""


@dataclass(frozen=True)
class Project:
    """What the kit found in a project directory."""

    directory: str
    name: str
    settings_module: str
    settings_source: str
    requirements_source: str
    requirements: list[str]


def settings_from_manage_py(manage_py: Path) -> str | None:
    """The module ``manage.py`` gives ``DJANGO_SETTINGS_MODULE`` (``os.environ.setdefault(...)``
    or an assignment), or ``None`` when it names none."""
    try:
        tree = ast.parse(manage_py.read_text(encoding="utf-8"), str(manage_py))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and len(node.args) == 2
            and all(isinstance(arg, ast.Constant) and isinstance(arg.value, str) for arg in node.args)
            and node.args[0].value == SETTINGS_VARIABLE
        ):
            return node.args[1].value
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and any(
                isinstance(target, ast.Subscript)
                and isinstance(target.slice, ast.Constant)
                and target.slice.value == SETTINGS_VARIABLE
                for target in node.targets
            )
        ):
            return node.value.value
    return None


def module_file(directory: Path, module: str) -> Path | None:
    """The file of ``module`` under ``directory`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    base = directory.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def find_settings(directory: Path, override: str = "") -> tuple[str, str]:
    """The project's settings module and where it came from."""
    if override:
        module, source = override, f"{SETTINGS_VARIABLE}={override}"
    else:
        manage_py = directory / "manage.py"
        if not manage_py.is_file():
            raise ProjectError(
                f"no manage.py in {directory}: PROJECT_DIR must name the directory that holds "
                f"your project's manage.py (or set {SETTINGS_VARIABLE} to its settings module)"
            )
        found = settings_from_manage_py(manage_py)
        if not found:
            raise ProjectError(
                f"{manage_py} sets no {SETTINGS_VARIABLE} (looked for "
                f"os.environ.setdefault('{SETTINGS_VARIABLE}', '...')): set {SETTINGS_VARIABLE} "
                "to your settings module, e.g. mysite.settings"
            )
        module, source = found, "manage.py"
    if not MODULE_NAME.match(module):
        raise ProjectError(
            f"{SETTINGS_VARIABLE}={module!r} is not a Python module name such as mysite.settings"
        )
    if module_file(directory, module) is None:
        raise ProjectError(
            f"settings module {module} (from {source}) is not a file under {directory}: "
            f"set {SETTINGS_VARIABLE} to your settings module, e.g. mysite.settings"
        )
    return module, source


def requirement_lines(path: Path) -> list[str]:
    """A requirements file's lines, comments and blanks dropped; ``-r`` includes followed."""
    lines: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        include = re.match(r"^(-r|--requirement)\s*(\S+)$", line)
        if include:
            lines.extend(requirement_lines(path.parent / include.group(2)))
        elif line.startswith(("-e", "--editable", "-c", "--constraint")) or line.startswith("."):
            raise ProjectError(
                f"{path}: {line!r} installs from a path or constraints file the image does not "
                f"have; list packages only, or set {REQUIREMENTS_VARIABLE} to a file that does"
            )
        else:
            lines.append(line)
    return lines


def poetry_lock_pins(path: Path) -> list[str]:
    """``name==version`` of every package poetry.lock installs by default (no dev group)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    pins = []
    for package in data.get("package", []):
        groups = package.get("groups") or [package.get("category", "main")]
        if "main" in groups and package.get("source", {}).get("type") not in ("directory", "file", "git"):
            pins.append(f"{package['name']}=={package['version']}")
    return pins


def pipfile_lock_pins(path: Path) -> list[str]:
    """``name==version`` of Pipfile.lock's default section."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        f"{name}{spec['version']}"
        for name, spec in data.get("default", {}).items()
        if isinstance(spec, dict) and spec.get("version")
    ]


def uv_lock_pins(path: Path) -> list[str]:
    """``name==version`` of every registry package uv.lock holds (the project itself left out)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    versions: dict[str, set[str]] = {}
    for package in data.get("package", []):
        if "registry" in package.get("source", {}):
            versions.setdefault(package["name"], set()).add(package["version"])
    split = sorted(name for name, found in versions.items() if len(found) > 1)
    if split:
        raise ProjectError(
            f"{path} resolves {', '.join(split)} to several versions (per platform): export one set "
            f"(uv export --no-dev --no-hashes -o requirements.txt) and set {REQUIREMENTS_VARIABLE}"
        )
    return [f"{name}=={found.pop()}" for name, found in sorted(versions.items())]


def pyproject_dependencies(path: Path) -> list[str] | None:
    """``[project].dependencies`` of pyproject.toml, or ``None`` when it has none."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    dependencies = data.get("project", {}).get("dependencies")
    return list(dependencies) if isinstance(dependencies, list) else None


LOCK_READERS = {"poetry.lock": poetry_lock_pins, "Pipfile.lock": pipfile_lock_pins, "uv.lock": uv_lock_pins}


def find_requirements(directory: Path, override: str = "") -> tuple[str, list[str]]:
    """The project's dependencies and the file they came from: ``PROJECT_REQUIREMENTS``, else a
    lock file, else a requirements file, else pyproject.toml's ``[project].dependencies``."""
    if override:
        path = Path(override) if Path(override).is_absolute() else directory / override
        if not path.is_file():
            raise ProjectError(f"{REQUIREMENTS_VARIABLE}={override}: no such file in {directory}")
        reader = LOCK_READERS.get(path.name, requirement_lines)
        return f"{REQUIREMENTS_VARIABLE}={override}", reader(path)
    for name in LOCK_FILES:
        if (directory / name).is_file():
            return name, LOCK_READERS[name](directory / name)
    for name in REQUIREMENT_FILES:
        if (directory / name).is_file():
            return name, requirement_lines(directory / name)
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        dependencies = pyproject_dependencies(pyproject)
        if dependencies is not None:
            return "pyproject.toml", dependencies
    looked = ", ".join([*LOCK_FILES, *REQUIREMENT_FILES, "pyproject.toml [project].dependencies"])
    raise ProjectError(
        f"no dependencies found in {directory} (looked for {looked}): "
        f"set {REQUIREMENTS_VARIABLE} to your requirements file"
    )


def project_name(directory: Path, settings_module: str) -> str:
    """A short lower-case name for images and stacks: the settings module's package, else the
    directory's name."""
    candidate = settings_module.split(".")[0] if "." in settings_module else directory.name
    name = re.sub(r"[^a-z0-9]+", "-", candidate.lower()).strip("-")
    return name or "project"


def discover(directory: Path, settings: str = "", requirements: str = "") -> Project:
    """Everything the kit derives from a project directory before building its image."""
    if not directory.is_dir():
        raise ProjectError(f"PROJECT_DIR={directory}: no such directory")
    module, source = find_settings(directory, settings)
    requirements_source, lines = find_requirements(directory, requirements)
    return Project(
        directory=str(directory),
        name=project_name(directory, module),
        settings_module=module,
        settings_source=source,
        requirements_source=requirements_source,
        requirements=lines,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--requirements", action="store_true", help="print the dependencies only")
    args = parser.parse_args(argv)
    settings = os.environ.get(SETTINGS_VARIABLE, "").strip()
    if settings == OVERLAY_SETTINGS:
        settings = ""  # the kit's own (inside its images): the project's is what is asked for
    try:
        project = discover(
            args.directory.resolve(),
            settings,
            os.environ.get(REQUIREMENTS_VARIABLE, "").strip(),
        )
    except (ProjectError, tomllib.TOMLDecodeError, json.JSONDecodeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.requirements:
        print("\n".join(project.requirements))
    else:
        print(json.dumps(asdict(project)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
