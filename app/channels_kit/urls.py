"""The kit's health views as a URL module: ``path("", include("channels_kit.urls"))``.

- ``healthz``: liveness, what container healthchecks probe; touches no dependency.
- ``readyz``: readiness, 503 while the database or the channel layer does not answer.
"""

from django.urls import path

from channels_kit.health import healthz, readyz

app_name = "channels_kit"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]
