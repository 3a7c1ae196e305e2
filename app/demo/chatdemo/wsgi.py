"""WSGI entry point (for a WSGI tier beside Daphne)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatdemo.settings")

application = get_wsgi_application()
