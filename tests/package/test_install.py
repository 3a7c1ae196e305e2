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
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_without_extras_the_kit_imports_and_names_the_extra_it_misses(bare):
    assert bare.django("runworker", "--help").stdout.startswith("usage:")
    result = bare.django("runworker", "--metrics-port", "9100", check=False)
    assert result.returncode != 0
    assert "pip install 'channels-kit[metrics]'" in result.stderr
    result = bare.django("runall", check=False)
    assert result.returncode != 0 and "pip install 'channels-kit[daphne]'" in result.stderr
    # channels_kit.layers names the Redis layer only when asked, so it imports without redis.
    run(
        bare.python,
        "-c",
        "import channels_kit.layers, channels_kit.conf, channels_kit.relay.asgi",
        cwd=bare.project,
    )
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
    assert "pip install 'channels-kit[speed]'" in result.stderr, result.stderr
    # The backend switch names the extra of a backend that is not installed.
    probe = "from channels_kit.conf import channel_layers_from_env; channel_layers_from_env()"
    for backend, server in (("rabbitmq", "RABBITMQ_HOST"), ("postgres", "POSTGRES_HOST")):
        env = {"CHANNEL_BACKEND": backend, server: backend, "PATH": str(bare.python.parent)}
        result = run(bare.python, "-c", probe, cwd=bare.project, env=env, check=False)
        assert f"pip install 'channels-kit[{backend}]'" in result.stderr, result.stderr


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
    result = run(full.python, "-c", script, cwd=full.project, env=env)
    location, *imported = result.stdout.split()
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
