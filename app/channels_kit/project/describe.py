"""What the kit found in the project it runs: ``manage.py kit_project`` prints it, ``make up``
derives the worker tiers and nginx's static files from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.utils.module_loading import import_string, module_has_submodule

from channels_kit.project.overlay import require_entry_point
from channels_kit.worker.selection import routed_channels, routed_protocols


def static_url_path(url: str) -> str:
    """The URL path nginx serves the static files at (``static/`` -> ``/static/``); empty when
    they live on another host (an absolute ``STATIC_URL``)."""
    if not url or "://" in url or url.startswith("//"):
        return ""
    return "/" + url.strip("/") + "/"


def static_files(root: str | None) -> int:
    """How many files ``collectstatic`` put under ``root``."""
    if not root or not Path(root).is_dir():
        return 0
    return sum(1 for path in Path(root).rglob("*") if path.is_file())


def describe() -> dict[str, Any]:
    """The project's settings module, entry points, routed protocols and channels, static
    files, apps with migrations, and the settings the kit replaced."""
    application = import_string(require_entry_point(settings, "ASGI"))
    return {
        "settings": getattr(settings, "KIT_PROJECT_SETTINGS", None) or settings.SETTINGS_MODULE,
        "asgi_application": settings.ASGI_APPLICATION,
        "wsgi_application": getattr(settings, "WSGI_APPLICATION", None),
        "protocols": sorted(routed_protocols(application)),
        "channels": routed_channels(application),
        "static_url": static_url_path(settings.STATIC_URL or ""),
        "static_root": str(settings.STATIC_ROOT or ""),
        "static_files": static_files(settings.STATIC_ROOT),
        "migrations": [
            config.label
            for config in apps.get_app_configs()
            if module_has_submodule(config.module, "migrations")
        ],
        "changes": [str(change) for change in getattr(settings, "KIT_SETTINGS_CHANGES", [])],
    }


def summary(found: dict[str, Any]) -> str:
    """``describe()`` as a few lines for a terminal."""
    lines = [
        f"settings      {found['settings']}",
        f"ASGI          {found['asgi_application']} (routes {', '.join(found['protocols'])})",
        f"WSGI          {found['wsgi_application'] or '(none)'}",
        f"channels      {', '.join(found['channels']) or '(no background channel)'}",
        f"static files  {found['static_files']} at {found['static_url'] or '(another host)'}",
        f"migrations    {', '.join(found['migrations']) or '(none)'}",
    ]
    lines += [f"replaced      {change}" for change in found["changes"]]
    return "\n".join(lines)
