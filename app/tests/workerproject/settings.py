"""Settings of the subprocess test project: the kit's Redis layer on TEST_REDIS_URL.

``WORKER_TEST_PREFIX`` keeps each test's channels apart; logging goes to stdout,
like the demo's, so the tests can tell that consumer tracebacks go to stderr.
"""

import os

SECRET_KEY = "unit-tests-only"
INSTALLED_APPS = ["channels_kit"]
DATABASES = {}
USE_TZ = True
ASGI_APPLICATION = "tests.workerproject.asgi.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_kit.layers.redis.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": os.environ["TEST_REDIS_URL"]}],
            "prefix": os.environ.get("WORKER_TEST_PREFIX", "asgi-workertest"),
        },
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"}
    },
    "root": {"handlers": ["stdout"], "level": "INFO"},
}
