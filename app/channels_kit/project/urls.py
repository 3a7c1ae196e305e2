"""The URLs of a project deployed by the kit: ``/healthz`` and ``/readyz``, then the project's own.

The project's error handlers (``handler404`` ...) carry over.
"""

from importlib import import_module

from django.conf import settings
from django.urls import include, path

_project = import_module(settings.KIT_PROJECT_URLCONF)

urlpatterns = [
    path("", include("channels_kit.urls")),
    path("", include(_project.urlpatterns)),
]

for _handler in ("handler400", "handler403", "handler404", "handler500"):
    if hasattr(_project, _handler):
        globals()[_handler] = getattr(_project, _handler)
