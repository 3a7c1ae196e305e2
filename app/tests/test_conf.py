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


def test_the_redis_password_goes_to_urls_without_credentials(monkeypatch):
    monkeypatch.setenv("REDIS_URLS", "redis://a:6379/0,redis://:own@b:6379/0")
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    first, second = conf.channel_layers_from_env()["default"]["CONFIG"]["hosts"]
    assert (first["address"], first["password"]) == ("redis://a:6379/0", "s3cret")
    assert second["address"] == "redis://:own@b:6379/0" and "password" not in second


def test_a_platform_redis_url_is_the_layer_when_no_shards_are_named(monkeypatch):
    for name in ("REDIS_URLS", "REDIS_TLS_URL", "REDIS_SSL_CERT_REQS", "REDIS_SSL_CA_CERTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://:secret@platform:6379")
    [host] = conf.channel_layers_from_env()["default"]["CONFIG"]["hosts"]
    assert host["address"] == "redis://:secret@platform:6379" and "ssl_cert_reqs" not in host
    # The TLS URL wins, with the certificate check the platform asks for.
    monkeypatch.setenv("REDIS_TLS_URL", "rediss://:secret@platform:6380")
    monkeypatch.setenv("REDIS_SSL_CERT_REQS", "none")
    [host] = conf.channel_layers_from_env()["default"]["CONFIG"]["hosts"]
    assert (host["address"], host["ssl_cert_reqs"]) == ("rediss://:secret@platform:6380", "none")
    monkeypatch.setenv("REDIS_SSL_CERT_REQS", "sometimes")
    with pytest.raises(ImproperlyConfigured, match="REDIS_SSL_CERT_REQS"):
        conf.channel_layers_from_env()
    # Named shards win over a platform's single URL.
    monkeypatch.setenv("REDIS_URLS", "redis://a:6379/0,redis://b:6379/0")
    assert len(conf.channel_layers_from_env()["default"]["CONFIG"]["hosts"]) == 2


def test_the_backend_switch_picks_one_layer_for_every_process(monkeypatch, tmp_path):
    for name in ("REDIS_URLS", "REDIS_URL", "REDIS_TLS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHANNEL_BACKEND", "local")
    monkeypatch.setenv("LOCAL_LAYER_PATH", str(tmp_path / "layer.sqlite3"))
    layer = conf.channel_layers_from_env()["default"]
    assert layer["BACKEND"] == "channels_kit.layers.local.LocalChannelLayer"
    assert layer["CONFIG"]["path"] == str(tmp_path / "layer.sqlite3")
    assert conf.channel_layer_from_env().path == tmp_path / "layer.sqlite3"
    monkeypatch.setenv("CHANNEL_BACKEND", "redis")
    with pytest.raises(ImproperlyConfigured, match="needs REDIS_URLS"):
        conf.channel_layers_from_env()
    monkeypatch.setenv("CHANNEL_BACKEND", "carrier-pigeon")
    with pytest.raises(ImproperlyConfigured, match="CHANNEL_BACKEND"):
        conf.channel_layers_from_env()


def test_rabbitmq_backend_from_a_url_or_its_parts(monkeypatch):
    for name in ("RABBITMQ_URL", "RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_VHOST", "RABBITMQ_HEARTBEAT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHANNEL_BACKEND", "rabbitmq")
    with pytest.raises(ImproperlyConfigured, match="needs RABBITMQ_URL or RABBITMQ_HOST"):
        conf.channel_layers_from_env()
    monkeypatch.setenv("RABBITMQ_HOST", "rabbitmq")
    monkeypatch.setenv("RABBITMQ_USER", "chat")
    monkeypatch.setenv("RABBITMQ_PASSWORD", "p@ss/word")
    layer = conf.channel_layers_from_env()["default"]
    assert layer["BACKEND"] == "channels_kit.layers.rabbitmq.RabbitMQChannelLayer"
    # The password is quoted into the URL; the default vhost "/" is %2F.
    assert layer["CONFIG"]["url"] == "amqp://chat:p%40ss%2Fword@rabbitmq:5672/%2F"
    assert layer["CONFIG"]["heartbeat"] == 30
    monkeypatch.setenv("RABBITMQ_URL", "amqps://u:p@broker.example:5671/site")
    assert (
        conf.channel_layers_from_env()["default"]["CONFIG"]["url"] == "amqps://u:p@broker.example:5671/site"
    )


def test_postgres_backend_from_its_url_the_platforms_or_the_parts(monkeypatch):
    for name in ("POSTGRES_LAYER_URL", "DATABASE_URL", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHANNEL_BACKEND", "postgres")
    with pytest.raises(ImproperlyConfigured, match="needs POSTGRES_LAYER_URL, DATABASE_URL or POSTGRES_HOST"):
        conf.channel_layers_from_env()
    monkeypatch.setenv("POSTGRES_HOST", "db")
    monkeypatch.setenv("POSTGRES_USER", "chat")
    monkeypatch.setenv("POSTGRES_PASSWORD", "p@ss/word")
    layer = conf.channel_layers_from_env()["default"]
    assert layer["BACKEND"] == "channels_kit.layers.postgres.PostgresChannelLayer"
    assert layer["CONFIG"]["url"] == "postgresql://chat:p%40ss%2Fword@db:5432/chat"
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@platform.example:5432/site")
    assert conf.channel_layers_from_env()["default"]["CONFIG"]["url"].startswith("postgres://u:p@platform")
    monkeypatch.setenv("POSTGRES_LAYER_URL", "postgresql://layer@db/chat")
    assert conf.channel_layers_from_env()["default"]["CONFIG"]["url"] == "postgresql://layer@db/chat"
