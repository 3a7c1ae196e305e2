import pytest
from django.core.exceptions import ImproperlyConfigured

from channels_kit import conf


def test_env_helpers_parse_and_reject(monkeypatch):
    monkeypatch.setenv("X_BOOL", "Yes")
    monkeypatch.setenv("X_INT", " 42 ")
    monkeypatch.setenv("X_LIST", "a, b,,c ")
    assert conf.env_bool("X_BOOL") is True
    assert conf.env_int("X_INT", 0) == 42
    assert conf.env_list("X_LIST") == ["a", "b", "c"]
    assert conf.env_bool("X_MISSING", default=True) is True
    # Empty is unset: compose passes the variables that .env leaves empty.
    for name in ("X_BOOL", "X_INT", "X_LIST", "X_STR"):
        monkeypatch.setenv(name, " ")
    assert conf.env_bool("X_BOOL", default=True) is True
    assert conf.env_int("X_INT", 7) == 7
    assert conf.env_list("X_LIST", "a,b") == ["a", "b"]
    assert conf.env_str("X_STR", "asgi") == "asgi"
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_BOOL"):
        conf.env_bool("X_BOOL")
    monkeypatch.setenv("X_INT", "many")
    with pytest.raises(ImproperlyConfigured, match="X_INT"):
        conf.env_int("X_INT", 0)


def test_channel_layers_default_to_in_memory(monkeypatch):
    monkeypatch.delenv("REDIS_URLS", raising=False)
    layers = conf.channel_layers_from_env()
    assert layers["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"


def test_channel_layers_from_redis_urls(monkeypatch):
    monkeypatch.setenv("REDIS_URLS", "redis://a:6379/0, redis://b:6379/0")
    monkeypatch.setenv("REDIS_SOCKET_TIMEOUT", "7")
    layer = conf.channel_layers_from_env()["default"]
    assert layer["BACKEND"] == "channels_kit.layers.redis.RedisChannelLayer"
    hosts = layer["CONFIG"]["hosts"]
    assert [h["address"] for h in hosts] == ["redis://a:6379/0", "redis://b:6379/0"]
    assert all(h["socket_timeout"] == 7.0 for h in hosts)
