"""The project's WSGI application (its ``WSGI_APPLICATION``), for uWSGI:
``--module channels_kit.project.wsgi:application``."""

import django
from django.conf import settings
from django.utils.module_loading import import_string

from channels_kit.project.overlay import require_entry_point

django.setup(set_prefix=False)
application = import_string(require_entry_point(settings, "WSGI"))
