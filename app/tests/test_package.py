"""The package as users hold it: installed from its wheel, old import paths, the backend
contract and the system check of its place in INSTALLED_APPS."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import channels_redis.core
from channels.layers import InMemoryChannelLayer
from django.core.checks import run_checks
from django.test.utils import override_settings

import channels_kit
from channels_kit.checks import APP_ORDER_ID
from channels_kit.layers.base import DrainableLayer, inspector_for
from channels_kit.layers.memory import MemoryInspector
from channels_kit.layers.redis import RedisChannelLayer
from channels_kit.layers.redis.inspector import RedisInspector


def test_the_kit_runs_from_its_installed_wheel():
    """In the images the package comes from site-packages, at the version it declares."""
    assert "site-packages" in Path(channels_kit.__file__).parts
    assert importlib.metadata.version("channels-kit") == channels_kit.__version__
    files = {str(f) for f in importlib.metadata.files("channels-kit")}
    assert "channels_kit/py.typed" in files
    assert any(f.endswith("licenses/LICENSE") for f in files)


def test_the_old_layer_path_still_names_the_redis_layer():
    from channels_kit.layers import RedisChannelLayer as old_path

    assert old_path is RedisChannelLayer


def test_each_backend_has_its_inspector_and_others_none():
    kit = RedisChannelLayer(hosts=[{"address": "redis://unused:6379/0"}])
    stock = channels_redis.core.RedisChannelLayer(hosts=[{"address": "redis://unused:6379/0"}])
    assert isinstance(inspector_for(kit), RedisInspector)
    assert isinstance(inspector_for(stock), RedisInspector)
    assert isinstance(inspector_for(InMemoryChannelLayer()), MemoryInspector)
    assert inspector_for(object()) is None


def test_only_the_kit_layer_hands_back_what_it_fetched():
    assert isinstance(RedisChannelLayer(hosts=[{"address": "redis://unused:6379/0"}]), DrainableLayer)
    assert not isinstance(InMemoryChannelLayer(), DrainableLayer)


def app_order_errors() -> list[str]:
    return [message.id for message in run_checks() if message.id == APP_ORDER_ID]


def test_channels_kit_after_channels_fails_the_system_check():
    with override_settings(INSTALLED_APPS=["channels", "channels_kit"]):
        assert app_order_errors() == [APP_ORDER_ID]
    with override_settings(INSTALLED_APPS=["channels_kit", "channels"]):
        assert app_order_errors() == []
    with override_settings(INSTALLED_APPS=["channels_kit"]):
        assert app_order_errors() == []
