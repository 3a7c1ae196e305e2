"""Django system checks of the kit's place in a project.

``channels_kit`` and ``channels`` both ship a ``runworker`` command, and Django runs the
one of the app listed first in ``INSTALLED_APPS``. With ``channels`` first, the upstream
worker would run silently: no channel filters, no bounded prefetch, no SIGTERM drain.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.checks import Error, register

APP_ORDER_ID = "channels_kit.E001"


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
