"""The project's ASGI application (its ``ASGI_APPLICATION``), for Daphne:
``daphne channels_kit.project.asgi:application``."""

import django
from django.conf import settings
from django.utils.module_loading import import_string

from channels_kit.project.overlay import require_entry_point

django.setup(set_prefix=False)
application = import_string(require_entry_point(settings, "ASGI"))
