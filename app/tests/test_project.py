"""channels_kit.project: a project found from its directory, and the kit's settings over its own."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from channels_kit.project import discover, overlay
from channels_kit.project.describe import static_url_path

MANAGE_PY = """\
import os, sys
def main():
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', '{module}')
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
"""


def make_project(root: Path, module: str = "mysite.settings", files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manage.py").write_text(MANAGE_PY.format(module=module))
    package = root / module.rsplit(".", 1)[0].replace(".", "/")
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text("DEBUG = True\n")
    for name, text in (files or {"requirements.txt": "Django>=5.2\nchannels==4.3.2  # pinned\n"}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def test_settings_and_requirements_are_found_as_startproject_writes_them(tmp_path) -> None:
    project = discover.discover(make_project(tmp_path / "mysite"))
    assert project.settings_module == "mysite.settings" and project.settings_source == "manage.py"
    assert project.requirements_source == "requirements.txt"
    assert project.requirements == ["Django>=5.2", "channels==4.3.2"]
    assert project.name == "mysite"


def test_django_settings_module_wins_and_must_exist(tmp_path) -> None:
    root = make_project(tmp_path / "p", files={"requirements.txt": "django\n"})
    (root / "mysite/production.py").write_text("")
    assert discover.discover(root, settings="mysite.production").settings_module == "mysite.production"
    with pytest.raises(discover.ProjectError, match=r"settings module mysite\.nope .* is not a file"):
        discover.discover(root, settings="mysite.nope")


def test_a_directory_without_manage_py_names_what_was_looked_for(tmp_path) -> None:
    with pytest.raises(discover.ProjectError, match=r"no manage\.py in .*PROJECT_DIR"):
        discover.discover(tmp_path)
    (tmp_path / "manage.py").write_text("print('no settings here')\n")
    with pytest.raises(discover.ProjectError, match="sets no DJANGO_SETTINGS_MODULE"):
        discover.discover(tmp_path)


def test_dependencies_from_locks_first_then_requirements_then_pyproject(tmp_path) -> None:
    poetry = """\
        [[package]]
        name = "django"
        version = "6.1.3"
        groups = ["main"]

        [[package]]
        name = "pytest"
        version = "9.0.0"
        groups = ["dev"]
    """
    root = make_project(tmp_path / "a", files={"poetry.lock": poetry, "requirements.txt": "ignored\n"})
    assert discover.discover(root).requirements == ["django==6.1.3"]
    pipfile = {"default": {"channels": {"version": "==4.3.2"}}, "develop": {"pytest": {"version": "==9"}}}
    root = make_project(tmp_path / "b", files={"Pipfile.lock": json.dumps(pipfile)})
    assert discover.discover(root).requirements == ["channels==4.3.2"]
    uv = """\
        [[package]]
        name = "mysite"
        version = "0.1.0"
        source = { virtual = "." }

        [[package]]
        name = "daphne"
        version = "4.2.3"
        source = { registry = "https://pypi.org/simple" }
    """
    root = make_project(tmp_path / "c", files={"uv.lock": uv})
    assert discover.discover(root).requirements == ["daphne==4.2.3"]
    pyproject = '[project]\nname = "mysite"\ndependencies = ["Django>=5.2", "channels"]\n'
    root = make_project(tmp_path / "d", files={"pyproject.toml": pyproject})
    found = discover.discover(root)
    assert (found.requirements_source, found.requirements) == ("pyproject.toml", ["Django>=5.2", "channels"])


def test_requirements_that_need_the_project_tree_are_refused_with_the_way_out(tmp_path) -> None:
    root = make_project(tmp_path / "p", files={"requirements.txt": "-e .\n"})
    with pytest.raises(discover.ProjectError, match="PROJECT_REQUIREMENTS"):
        discover.discover(root)
    root = make_project(tmp_path / "q", files={"README": "no dependencies"})
    with pytest.raises(discover.ProjectError, match=r"no dependencies found .*requirements.txt"):
        discover.discover(root)
    nested = {"requirements/base.txt": "django\n", "requirements/prod.txt": "-r base.txt\ndaphne\n"}
    root = make_project(tmp_path / "r", files=nested)
    assert discover.discover(root).requirements == ["django", "daphne"]


def test_the_command_line_prints_json_or_exits_2(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "channels_kit.project.settings")  # as in the images
    assert discover.main([str(make_project(tmp_path / "mysite"))]) == 0
    assert json.loads(capsys.readouterr().out)["settings_module"] == "mysite.settings"
    assert discover.main([str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err


@pytest.fixture
def tutorial_settings(tmp_path, monkeypatch) -> str:
    """A settings module as the Channels tutorial leaves it, importable as ``tut.settings``."""
    package = tmp_path / "tut"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "asgi.py").write_text("application = None\n")
    (package / "settings.py").write_text(
        textwrap.dedent("""\
            SECRET_KEY = "django-insecure-tutorial"
            DEBUG = True
            ALLOWED_HOSTS = []
            INSTALLED_APPS = ["daphne", "channels", "chat", "django.contrib.auth"]
            MIDDLEWARE = ["django.middleware.security.SecurityMiddleware"]
            ROOT_URLCONF = "tut.urls"
            DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"},
                         "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": "other.sqlite3"}}
            CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                          "CONFIG": {"hosts": [("127.0.0.1", 6379)]}}}
            lower_case = "not a setting"
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KIT_PROJECT_SETTINGS", "tut.settings")
    for name in ("DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    yield "tut.settings"
    sys.modules.pop("tut.settings", None)
    sys.modules.pop("tut", None)


def stack_environment(monkeypatch) -> None:
    monkeypatch.setenv("DJANGO_SECRET_KEY", "s3cret-from-the-stack")
    monkeypatch.setenv("POSTGRES_HOST", "db")
    monkeypatch.setenv("POSTGRES_PASSWORD", "pw")
    monkeypatch.setenv("CHANNEL_BACKEND", "redis")
    monkeypatch.setenv("REDIS_URLS", "redis://redis-1:6379/0,redis://redis-2:6379/0")


def test_the_overlay_replaces_what_production_must_change(tutorial_settings, monkeypatch) -> None:
    stack_environment(monkeypatch)
    target: dict = {}
    changes = {change.setting: change for change in overlay.apply(target)}
    assert target["SECRET_KEY"] == "s3cret-from-the-stack" and target["DEBUG"] is False
    assert target["ALLOWED_HOSTS"] == [".localhost", "127.0.0.1", "[::1]"]
    default = target["DATABASES"]["default"]
    assert (default["ENGINE"], default["HOST"], default["CONN_MAX_AGE"]) == (
        "django.db.backends.postgresql",
        "db",
        60,
    )
    assert default["CONN_HEALTH_CHECKS"] is True and target["DATABASES"]["other"]["NAME"] == "other.sqlite3"
    hosts = [host["address"] for host in target["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"]]
    assert hosts == ["redis://redis-1:6379/0", "redis://redis-2:6379/0"]
    assert target["INSTALLED_APPS"] == ["daphne", "channels_kit", "channels", "chat", "django.contrib.auth"]
    assert (
        target["MIDDLEWARE"][0] == overlay.SERVED_BY
        and target["MIDDLEWARE"][-1] == overlay.DATABASE_UNAVAILABLE
    )
    assert (target["ROOT_URLCONF"], target["KIT_PROJECT_URLCONF"]) == (
        "channels_kit.project.urls",
        "tut.urls",
    )
    assert target["ASGI_APPLICATION"] == "tut.asgi.application"  # startproject's module, found
    assert "WSGI_APPLICATION" not in target  # no tut/wsgi.py: nothing invented
    assert "lower_case" not in target
    # The record: what changed, lists by what was added, never a secret.
    assert str(changes["DEBUG"]) == "DEBUG: True -> False"
    assert str(changes["INSTALLED_APPS"]) == "INSTALLED_APPS: 4 entries -> added channels_kit"
    assert "127.0.0.1:6379" in str(changes["CHANNEL_LAYERS"]) and "redis-1" in str(changes["CHANNEL_LAYERS"])
    assert "sqlite3 db.sqlite3" in str(changes["DATABASES"]) and "postgresql db:5432/chat" in str(
        changes["DATABASES"]
    )
    record = " ".join(map(str, changes.values()))
    assert "s3cret" not in record and "django-insecure" not in record and "pw" not in record.split()


def test_kept_settings_and_overlay_off(tutorial_settings, monkeypatch) -> None:
    stack_environment(monkeypatch)
    monkeypatch.setenv("PROJECT_SETTINGS_KEEP", "DATABASES, LOGGING")
    target: dict = {}
    changed = {change.setting for change in overlay.apply(target)}
    assert target["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert {"DATABASES", "LOGGING"}.isdisjoint(changed) and "DEBUG" in changed
    monkeypatch.setenv("PROJECT_SETTINGS_KEEP", "DATABSES")
    with pytest.raises(ImproperlyConfigured, match="DATABSES is not a setting the kit replaces; choose from"):
        overlay.apply({})
    monkeypatch.setenv("PROJECT_SETTINGS_OVERLAY", "off")
    target = {}
    assert overlay.apply(target) == [] and target["DEBUG"] is True and target["ROOT_URLCONF"] == "tut.urls"


def test_with_no_layer_named_the_projects_own_stays(tutorial_settings, monkeypatch) -> None:
    for name in ("CHANNEL_BACKEND", "REDIS_URLS"):
        monkeypatch.delenv(name, raising=False)
    target: dict = {}
    overlay.apply(target)
    assert target["CHANNEL_LAYERS"]["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert target["SECRET_KEY"] == "django-insecure-tutorial"  # no DJANGO_SECRET_KEY: kept
    monkeypatch.setenv("CHANNELS_ENABLED", "false")
    overlay.apply(target := {})
    assert target["CHANNEL_LAYERS"] == {}


def test_a_missing_project_settings_module_is_named(monkeypatch) -> None:
    monkeypatch.delenv("KIT_PROJECT_SETTINGS", raising=False)
    with pytest.raises(ImproperlyConfigured, match="KIT_PROJECT_SETTINGS is not set"):
        overlay.apply({})
    monkeypatch.setenv("KIT_PROJECT_SETTINGS", "no_such_project.settings")
    with pytest.raises(ImproperlyConfigured, match="cannot import the project's settings"):
        overlay.apply({})


def test_a_project_without_an_asgi_application_is_told_what_sets_it() -> None:
    class Settings:
        KIT_PROJECT_SETTINGS = "mysite.settings"
        SETTINGS_MODULE = "channels_kit.project.settings"
        ASGI_APPLICATION = None

    with pytest.raises(ImproperlyConfigured, match=r"no module mysite\.asgi.*PROJECT_ASGI_APPLICATION"):
        overlay.require_entry_point(Settings, "ASGI")


@pytest.mark.parametrize(
    ("url", "path"),
    [("static/", "/static/"), ("/assets", "/assets/"), ("https://cdn.example.com/s/", ""), ("//cdn/", "")],
)
def test_static_url_path(url: str, path: str) -> None:
    assert static_url_path(url) == path
