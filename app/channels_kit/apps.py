"""Django app config: makes the kit's management commands and system checks known, and its
log lines seen."""

from __future__ import annotations

import logging
import math
import sys

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured

from channels_kit.conf import env_str

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configured_threshold(logger: logging.Logger) -> float:
    """The lowest level at which a record of ``logger`` reaches a handler configured on it or
    its ancestors (``math.inf``: none, so Python's last resort shows WARNING and up)."""
    levels = []
    node: logging.Logger | None = logger
    while node is not None:
        levels += [handler.level for handler in node.handlers]
        node = node.parent if node.propagate else None
    return min(levels, default=math.inf)


def show_kit_logs() -> None:
    """Show the ``channels_kit`` loggers' records at ``LOG_LEVEL`` (INFO) and up on stdout, when
    nothing the project configured would: a stdout handler for the levels its handlers do
    not show (so no line is printed twice), and the logger's level, unless the project set it."""
    raw = env_str("LOG_LEVEL", "INFO")
    if raw.upper() not in LEVELS:
        raise ImproperlyConfigured(f"LOG_LEVEL={raw!r}: expected one of {', '.join(LEVELS)}")
    level = logging.getLevelName(raw.upper())
    logger = logging.getLogger("channels_kit")
    if any(getattr(handler, "channels_kit_default", False) for handler in logger.handlers):
        return  # set up already (a second django.setup())
    if logger.level == logging.NOTSET and logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    shown_by_project = configured_threshold(logger)
    if shown_by_project <= level:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.channels_kit_default = True
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(lambda record: record.levelno < shown_by_project)
    logger.addHandler(handler)


def log_settings_changes() -> None:
    """Each setting the kit's overlay replaced (``channels_kit.project.settings``), once per
    process, whatever logging the project configured. On stderr: the container's log shows it,
    and the stdout of a command that prints data (``channels_status --json``) stays data."""
    from django.conf import settings

    changes = getattr(settings, "KIT_SETTINGS_CHANGES", None)
    if changes is None:
        return
    logger = logging.getLogger("channels_kit.project")
    if not any(getattr(handler, "channels_kit_default", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.channels_kit_default = True
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    logger.info("settings: %s, with the kit's production settings over it", settings.KIT_PROJECT_SETTINGS)
    for change in changes:
        logger.info("replaced %s", change)


class ChannelsKitConfig(AppConfig):
    """Registers the kit's ``runworker`` (which overrides Channels' own) and ``channels_status``."""

    name = "channels_kit"
    verbose_name = "Channels deployment kit"

    def ready(self) -> None:
        from channels_kit import checks  # noqa: F401 - registers the system checks

        show_kit_logs()
        log_settings_changes()
