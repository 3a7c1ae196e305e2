"""Minimal Django settings for the kit's unit tests."""

SECRET_KEY = "unit-tests-only"
INSTALLED_APPS = ["channels_kit"]
DATABASES = {}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
USE_TZ = True
