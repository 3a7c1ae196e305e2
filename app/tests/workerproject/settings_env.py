"""The subprocess test project configured as the kit's users configure theirs: the layer
from the environment (``channel_layers_from_env()``: REDIS_URLS, CHANNEL_LAYER_PREFIX, ...)
and no ``LOGGING`` at all, so the kit's own log lines must reach stdout by themselves."""

from channels_kit.conf import channel_layers_from_env

SECRET_KEY = "unit-tests-only"
INSTALLED_APPS = ["channels_kit"]
DATABASES = {}
USE_TZ = True
ASGI_APPLICATION = "tests.workerproject.asgi.application"
CHANNEL_LAYERS = channel_layers_from_env()
