"""Django system checks of the kit's place in a project.

``channels_kit`` and ``channels`` both ship a ``runworker`` command, and Django runs the
one of the app listed first in ``INSTALLED_APPS``. With ``channels`` first, the upstream
worker would run silently: no channel filters, no bounded prefetch, no SIGTERM drain.

A variable set in the environment that the kit does not read but that looks like one it
does (``REDIS_ULR``) is a warning: the kit would silently use its default instead.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.checks import Error, Warning, register

from channels_kit.variables import lookalike_message, lookalikes

APP_ORDER_ID = "channels_kit.E001"
LOOKALIKE_ID = "channels_kit.W001"


@register()
def check_app_order(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """``channels_kit`` must come before ``channels`` in ``INSTALLED_APPS``."""
    names = [config.name for config in apps.get_app_configs()]
    if "channels" not in names or "channels_kit" not in names:
        return []
    if names.index("channels_kit") < names.index("channels"):
        return []
    return [
        Error(
            "'channels_kit' comes after 'channels' in INSTALLED_APPS, so `manage.py runworker` "
            "would run Channels' own worker instead of the kit's.",
            hint="Put 'channels_kit' before 'channels' in INSTALLED_APPS.",
            id=APP_ORDER_ID,
        )
    ]


@register()
def check_variable_names(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """No variable set that looks like a typo of one the kit reads (``channels_kit.variables.VARIABLES``)."""
    return [
        Warning(
            lookalike_message(name, meant),
            hint=f"Rename it to {meant}, or silence {LOOKALIKE_ID} (SILENCED_SYSTEM_CHECKS) if it is "
            "another program's.",
            id=LOOKALIKE_ID,
        )
        for name, meant in lookalikes()
    ]
