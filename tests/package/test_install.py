"""The kit as a Django team installs it: the wheel built from app/, pip-installed into a clean
virtualenv with nothing else from this repository, used by a scratch project of its own.

Run on the host by `make test` (scripts/test), before any container starts; dependencies
come from the package index, held to the images' pins (app/requirements.txt).
"""

from __future__ import annotations

import email.parser
import json
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app"
SOURCE = APP / "channels_kit"
TIMEOUT = 600  # a pip install on a cold cache


def run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, check=True):
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, command))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def source_modules() -> list[str]:
    """Every module of the package's source tree, as dotted names."""
    modules = []
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(APP).with_suffix("").parts
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


@dataclass
class Environment:
    """A clean virtualenv and a scratch Django project that knows only the installed kit."""

    python: Path
    project: Path

    def django(self, *args: str, settings: str = "scratch.settings", check: bool = True):
        env = {"PATH": str(self.python.parent), "DJANGO_SETTINGS_MODULE": settings, "HOME": str(self.project)}
        return run(self.python, "-m", "django", *args, cwd=self.project, env=env, check=check)


# What the package is built from (the images copy the same files).
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "channels_kit")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel that `pip install ./app` builds (build isolation, the declared backend),
    from a copy of the package's files, so that the build leaves nothing in the checkout."""
    source = tmp_path_factory.mktemp("source")
    for name in PACKAGE_FILES:
        if (APP / name).is_dir():
            shutil.copytree(APP / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(APP / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", out, source)
    [built] = out.glob("channels_kit-*.whl")
    return built


@pytest.fixture(scope="module")
def constraints(tmp_path_factory) -> Path:
    """The images' pins as pip constraints (which take no extras)."""
    path = tmp_path_factory.mktemp("pins") / "constraints.txt"
    pins = (APP / "requirements.txt").read_text()
    path.write_text(re.sub(r"\[[^\]]*\]", "", pins))
    return path


SETTINGS = """
SECRET_KEY = "scratch"
INSTALLED_APPS = ["channels_kit", "channels", "django.contrib.contenttypes"]
DATABASES = {}
USE_TZ = True
ALLOWED_HOSTS = ["testserver"]
MIDDLEWARE = ["channels_kit.middleware.ServedByMiddleware"]
ROOT_URLCONF = "scratch.urls"
ASGI_APPLICATION = "scratch.asgi.application"
from channels_kit.conf import channel_layers_from_env  # noqa: E402
CHANNEL_LAYERS = channel_layers_from_env()
"""
URLS = """
from django.urls import include, path

urlpatterns = [path("", include("channels_kit.urls"))]
"""
WRONG_ORDER = """
from scratch.settings import *  # noqa: F403
INSTALLED_APPS = ["channels", "channels_kit", "django.contrib.contenttypes"]
"""
WSGI = """
from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
"""
ASGI = """
from channels.consumer import AsyncConsumer
from channels.routing import ChannelNameRouter, ProtocolTypeRouter


class Jobs(AsyncConsumer):
    async def job_run(self, message):
        pass


application = ProtocolTypeRouter({"channel": ChannelNameRouter({"jobs": Jobs.as_asgi()})})
"""


def make_environment(root: Path, requirement: str, constraints: Path) -> Environment:
    """A new virtualenv with ``requirement`` installed, and the scratch project beside it."""
    run(sys.executable, "-m", "venv", root / "venv")
    python = root / "venv" / "bin" / "python"
    run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-c",
        constraints,
        requirement,
    )
    package = root / "project" / "scratch"
    package.mkdir(parents=True)
    for name, text in {
        "__init__": "",
        "settings": SETTINGS,
        "wrong_order": WRONG_ORDER,
        "asgi": ASGI,
        "wsgi": WSGI,
        "urls": URLS,
    }.items():
        (package / f"{name}.py").write_text(text)
    return Environment(python, root / "project")


@pytest.fixture(scope="module")
def bare(tmp_path_factory, wheel, constraints) -> Environment:
    """The wheel without extras."""
    return make_environment(tmp_path_factory.mktemp("bare"), str(wheel), constraints)


@pytest.fixture(scope="module")
def full(tmp_path_factory, wheel, constraints) -> Environment:
    """The wheel with every extra."""
    return make_environment(
        tmp_path_factory.mktemp("full"),
        f"{wheel}[redis,rabbitmq,postgres,metrics,daphne,speed,testing]",
        constraints,
    )


def test_the_wheel_holds_every_module_and_the_package_metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    packaged = {name.removesuffix(".py").replace("/", ".").removesuffix(".__init__") for name in names}
    assert set(source_modules()) <= packaged, sorted(set(source_modules()) - packaged)
    assert "channels_kit/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    version = re.search(r'__version__ = "([^"]+)"', (SOURCE / "__init__.py").read_text()).group(1)
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert {"redis", "metrics", "daphne", "speed", "testing"} <= set(metadata.get_all("Provides-Extra"))
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    assert {"Framework :: Django :: 5.2", "Framework :: Django :: 6.1"} <= set(metadata.get_all("Classifier"))
    assert "Django<7,>=5.2" in metadata.get_all("Requires-Dist")
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_without_extras_the_kit_imports_and_names_the_extra_it_misses(bare):
    assert bare.django("runworker", "--help").stdout.startswith("usage:")
    result = bare.django("runworker", "--metrics-port", "9100", check=False)
    assert result.returncode != 0
    assert "install the kit's 'metrics' extra (pip install './app[metrics]'" in result.stderr
    result = bare.django("runall", check=False)
    assert result.returncode != 0 and "pip install './app[daphne]'" in result.stderr
    # channels_kit.layers names the Redis layer only when asked, so it imports without redis;
    # the relay too, on a layer of no extra (it refuses the in-memory one).
    layer_env = {"PATH": str(bare.python.parent), "CHANNEL_BACKEND": "local"}
    layer_env["LOCAL_LAYER_PATH"] = str(bare.project / "layer.sqlite3")
    run(
        bare.python,
        "-c",
        "import channels_kit.layers, channels_kit.conf, channels_kit.relay.asgi",
        cwd=bare.project,
        env=layer_env,
    )
    env = {"PATH": str(bare.python.parent)}
    result = run(bare.python, "-c", "import channels_kit.relay.asgi", cwd=bare.project, env=env, check=False)
    assert result.returncode != 0 and "in-memory one, which lives inside one process" in result.stderr
    result = run(
        bare.python, "-c", "from channels_kit.layers import RedisChannelLayer", cwd=bare.project, check=False
    )
    assert "No module named 'channels_redis'" in result.stderr
    # Without uvloop the kit runs on asyncio's loop; asked for uvloop, it names the extra.
    probe = "from channels_kit.event_loop import loop_name; print(loop_name())"
    env = {"PATH": str(bare.python.parent)}
    assert run(bare.python, "-c", probe, cwd=bare.project, env=env).stdout.strip() == "asyncio"
    env = {"EVENT_LOOP": "uvloop", "PATH": str(bare.python.parent)}
    result = run(bare.python, "-c", probe, cwd=bare.project, env=env, check=False)
    assert "pip install './app[speed]'" in result.stderr, result.stderr
    # The backend switch names the extra of a backend that is not installed.
    probe = "from channels_kit.conf import channel_layers_from_env; channel_layers_from_env()"
    for backend, server in (("rabbitmq", "RABBITMQ_HOST"), ("postgres", "POSTGRES_HOST")):
        env = {"CHANNEL_BACKEND": backend, server: backend, "PATH": str(bare.python.parent)}
        result = run(bare.python, "-c", probe, cwd=bare.project, env=env, check=False)
        assert f"pip install './app[{backend}]' from the root of the kit's checkout" in result.stderr, (
            result.stderr
        )
        assert "channels-kit[" not in result.stderr


def test_with_every_extra_every_module_imports_and_the_commands_run(full):
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import django
        django.setup()
        import channels_kit
        names = sorted(m.name for m in pkgutil.walk_packages(channels_kit.__path__, "channels_kit."))
        for name in names:
            importlib.import_module(name)
        print(channels_kit.__file__)
        print("\\n".join(names))
        """
    )
    env = {"DJANGO_SETTINGS_MODULE": "scratch.settings", "PATH": str(full.python.parent)}
    # Modules that act on import get what they need: the relay's builds its application on a
    # layer workers can share; the project overlay's modules run under its settings, which
    # wrap the project's own.
    layer_env = env | {
        "CHANNEL_BACKEND": "local",
        "LOCAL_LAYER_PATH": str(full.project / "layer.sqlite3"),
        "DJANGO_SETTINGS_MODULE": "channels_kit.project.settings",
        "KIT_PROJECT_SETTINGS": "scratch.settings",
    }
    result = run(full.python, "-c", script, cwd=full.project, env=layer_env)
    # What the script printed, after any log lines of the modules it imported.
    lines = result.stdout.split()
    location, *imported = lines[next(i for i, line in enumerate(lines) if line.endswith("__init__.py")) :]
    assert "site-packages" in location and str(REPO) not in location
    assert set(imported) == set(source_modules()) - {"channels_kit"}
    # The health views as docs/using-the-kit.md wires them (no database here: not ready).
    probe = textwrap.dedent(
        """
        import django, json
        django.setup()
        from django.test import Client
        healthz, readyz = Client().get("/healthz"), Client().get("/readyz")
        print(healthz.status_code, healthz["X-Served-By"], readyz.status_code, json.dumps(readyz.json()))
        """
    )
    healthz, served_by, readyz, checks = run(
        full.python, "-c", probe, cwd=full.project, env=env
    ).stdout.split(" ", 3)
    assert (healthz, readyz) == ("200", "503") and served_by.startswith("django/")
    assert json.loads(checks)["checks"]["channel_layer"]["ok"] is True
    probe = "from channels_kit.event_loop import loop_name; print(loop_name())"
    assert run(full.python, "-c", probe, cwd=full.project, env=env).stdout.strip() == "uvloop"
    # The oldest pair the package supports: this host's Python (3.11) and the pinned Django
    # 5.2 (the newest pair runs in the unit image: compose/test.yaml's unit-newest).
    version = run(full.python, "-c", "import django; print(django.get_version())", cwd=full.project, env=env)
    assert version.stdout.startswith("5.2."), version.stdout
    for command in ("runworker", "channels_status", "runall"):
        assert full.django(command, "--help").stdout.startswith("usage:")
    assert "System check identified no issues" in full.django("check").stdout


def test_channels_listed_before_the_kit_fails_the_system_check(bare):
    result = bare.django("check", settings="scratch.wrong_order", check=False)
    assert result.returncode != 0
    assert "channels_kit.E001" in result.stderr
    # The check runs before any command, so the upstream worker never starts silently.
    result = bare.django("runworker", "jobs", settings="scratch.wrong_order", check=False)
    assert result.returncode != 0 and "channels_kit.E001" in result.stderr


# --- what the docs and the kit's other files say of the package ------------------------------


def test_the_install_section_lists_every_extra():
    """docs/using-the-kit.md's extras table (its Install section) names each extra of
    app/pyproject.toml, and no other."""
    extras = set(tomllib.loads((APP / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    text = (REPO / "docs" / "using-the-kit.md").read_text()
    install = text.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z]+)` \|", install, re.M))
    assert listed == extras, f"missing: {sorted(extras - listed)}, not extras: {sorted(listed - extras)}"


def test_no_variable_of_the_kit_looks_like_a_typo_to_the_package(full):
    """Every variable of .env.example (the images', compose's, the demo's and the package's) is
    one the package reads or one it does not mistake for a typo of those."""
    names = sorted(set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.M)))
    script = (
        "import json, sys; from channels_kit.variables import lookalikes; "
        "print(json.dumps(lookalikes({name: 'x' for name in sys.argv[1:]})))"
    )
    env = {"PATH": str(full.python.parent)}
    found = json.loads(run(full.python, "-c", script, *names, cwd=full.project, env=env).stdout)
    assert not found, (
        f"{found}: rename the variable, or add it to channels_kit.variables.READ_ELSEWHERE (read by the "
        "kit's images or scripts, not the package)"
    )
