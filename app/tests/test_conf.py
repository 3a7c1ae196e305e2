import pytest
from django.core.exceptions import ImproperlyConfigured

from channels_kit import conf, variables


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


def layer_from_parts(monkeypatch, backend: str, unset: tuple[str, ...], missing: str, host: str) -> dict:
    """CHANNEL_BACKEND=``backend`` with none of ``unset``: refused, naming ``missing``; then with
    <BACKEND>_HOST=``host``, a user and a password to quote: the layer's settings."""
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHANNEL_BACKEND", backend)
    with pytest.raises(ImproperlyConfigured, match=f"needs {missing}"):
        conf.channel_layers_from_env()
    monkeypatch.setenv(f"{backend.upper()}_HOST", host)
    monkeypatch.setenv(f"{backend.upper()}_USER", "chat")
    monkeypatch.setenv(f"{backend.upper()}_PASSWORD", "p@ss/word")
    return conf.channel_layers_from_env()["default"]


def test_rabbitmq_backend_from_a_url_or_its_parts(monkeypatch):
    unset = ("RABBITMQ_URL", "RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_VHOST", "RABBITMQ_HEARTBEAT")
    layer = layer_from_parts(monkeypatch, "rabbitmq", unset, "RABBITMQ_URL or RABBITMQ_HOST", "rabbitmq")
    assert layer["BACKEND"] == "channels_kit.layers.rabbitmq.RabbitMQChannelLayer"
    # The password is quoted into the URL; the default vhost "/" is %2F.
    assert layer["CONFIG"]["url"] == "amqp://chat:p%40ss%2Fword@rabbitmq:5672/%2F"
    assert layer["CONFIG"]["heartbeat"] == 30
    monkeypatch.setenv("RABBITMQ_URL", "amqps://u:p@broker.example:5671/site")
    assert (
        conf.channel_layers_from_env()["default"]["CONFIG"]["url"] == "amqps://u:p@broker.example:5671/site"
    )


def test_postgres_backend_from_its_url_the_platforms_or_the_parts(monkeypatch):
    unset = ("POSTGRES_LAYER_URL", "DATABASE_URL", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB")
    layer = layer_from_parts(
        monkeypatch, "postgres", unset, "POSTGRES_LAYER_URL, DATABASE_URL or POSTGRES_HOST", "db"
    )
    assert layer["BACKEND"] == "channels_kit.layers.postgres.PostgresChannelLayer"
    assert layer["CONFIG"]["url"] == "postgresql://chat:p%40ss%2Fword@db:5432/chat"
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@platform.example:5432/site")
    assert conf.channel_layers_from_env()["default"]["CONFIG"]["url"].startswith("postgres://u:p@platform")
    monkeypatch.setenv("POSTGRES_LAYER_URL", "postgresql://layer@db/chat")
    assert conf.channel_layers_from_env()["default"]["CONFIG"]["url"] == "postgresql://layer@db/chat"


# --- layer URLs: checked, named, masked -------------------------------------------------

LAYER_VARIABLES = (
    "CHANNEL_BACKEND",
    "REDIS_URLS",
    "REDIS_URL",
    "REDIS_TLS_URL",
    "RABBITMQ_URL",
    "RABBITMQ_HOST",
    "POSTGRES_LAYER_URL",
    "DATABASE_URL",
    "POSTGRES_HOST",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_USERNAME",
    "REDIS_SENTINEL_PASSWORD",
)


@pytest.fixture
def clean_layer_env(monkeypatch):
    for name in LAYER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("REDIS_URLS", "127.0.0.1:6379", "it has no scheme (redis://127.0.0.1:6379?)"),
        ("REDIS_URLS", "redis://", "it names no host"),
        ("REDIS_URL", "redis://:s3cret@", "it names no host"),
        ("REDIS_URLS", "redis://:s3cret@redis:99999/0", "port"),
        ("REDIS_URLS", "redis://redis:six", "port"),
        ("REDIS_URLS", "sentinel://shard-1", "scheme 'sentinel' is not one of"),
        ("REDIS_URLS", "redis+sentinel://redis:26379", "it names a port: a Sentinel shard names its master"),
        ("REDIS_URLS", "redis+sentinel://shard-1?socket_timeout=3", "a Sentinel shard takes none"),
        ("REDIS_URLS", "redis://redis:6379/zero", "database 'zero' is not a number"),
        ("REDIS_URLS", "redis://redis:6379/0?ssl_cert_reqs=none", "ssl_cert_reqs is a TLS option"),
        ("REDIS_TLS_URL", "rediss://:s3cret@redis:6380?ssl_cert_reqs=sometimes", "'sometimes' is not one of"),
        ("REDIS_URLS", "redis://redis/0?sokcet_timeout=3", "option 'sokcet_timeout' is not one"),
        ("REDIS_URLS", "redis://redis/0?socket_timeout=soon", "socket_timeout='soon' is not a number"),
        ("REDIS_URLS", "unix://", "it names no socket path"),
    ],
)
def test_a_malformed_redis_url_names_its_variable_value_and_the_forms_allowed(
    clean_layer_env, variable, value, problem
):
    clean_layer_env.setenv(variable, value)
    with pytest.raises(ImproperlyConfigured) as raised:
        conf.channel_layers_from_env()
    message = str(raised.value)
    assert message.startswith(f"{variable}={conf.masked(value)!r}: "), message
    assert problem in message
    assert "Expected redis://[[user]:password@]host[:port][/db], rediss://" in message
    assert "s3cret" not in message


def test_a_bad_shard_among_several_is_named_by_its_place(clean_layer_env):
    clean_layer_env.setenv("REDIS_URLS", "redis://a:6379/0, redis://:s3cret@b:0/0")
    with pytest.raises(
        ImproperlyConfigured, match=r"^REDIS_URLS item 2 of 2, 'redis://:\*\*\*@b:0/0': its port"
    ):
        conf.channel_layers_from_env()
    clean_layer_env.setenv("REDIS_URLS", "redis://a:6379/0,redis://a:6379/0")
    with pytest.raises(ImproperlyConfigured, match="names 'redis://a:6379/0' twice"):
        conf.channel_layers_from_env()


def test_sentinel_shards_name_their_master_and_share_the_sentinels(clean_layer_env):
    clean_layer_env.setenv("REDIS_URLS", "redis+sentinel://shard-1,redis+sentinel://:own@Shard_2/1")
    clean_layer_env.setenv("REDIS_SENTINELS", "sentinel-1:26379, sentinel-2:26380,[::1]:26381")
    clean_layer_env.setenv("REDIS_SENTINEL_PASSWORD", "s3cret")
    first, second = conf.channel_layers_from_env()["default"]["CONFIG"]["hosts"]
    assert first["address"] == "redis+sentinel://shard-1"
    assert first["sentinels"] == [("sentinel-1", 26379), ("sentinel-2", 26380), ("::1", 26381)]
    assert first["sentinel_kwargs"] == {"password": "s3cret"}
    assert second["address"] == "redis+sentinel://:own@Shard_2/1"


@pytest.mark.parametrize(
    ("sentinels", "problem"),
    [
        ("", "REDIS_URLS names the Sentinel shard 'redis+sentinel://shard-1' but REDIS_SENTINELS is empty"),
        ("sentinel-1", "REDIS_SENTINELS item 'sentinel-1': expected host:port of each Sentinel"),
        ("sentinel-1:0", "REDIS_SENTINELS item 'sentinel-1:0': expected host:port"),
        ("redis://sentinel-1:26379", "REDIS_SENTINELS item 'redis://sentinel-1:26379': expected host:port"),
    ],
)
def test_a_sentinel_shard_without_usable_sentinels_is_refused(clean_layer_env, sentinels, problem):
    clean_layer_env.setenv("REDIS_URLS", "redis+sentinel://shard-1")
    clean_layer_env.setenv("REDIS_SENTINELS", sentinels)
    with pytest.raises(ImproperlyConfigured) as raised:
        conf.channel_layers_from_env()
    assert problem in str(raised.value)


def test_every_form_the_redis_layer_takes_still_passes(clean_layer_env):
    urls = [
        "redis://redis-1:6379/0",
        "redis://:p%40ss@redis-2/3",
        "redis://user:pass@10.0.0.1",
        "redis://[::1]:6380/1?socket_timeout=3&health_check_interval=10&max_connections=50",
        "rediss://:pass@managed.example.com:25061/0?ssl_cert_reqs=none&ssl_check_hostname=false",
        "unix:///run/redis/redis.sock?db=2",
    ]
    clean_layer_env.setenv("REDIS_URLS", ",".join(urls))
    hosts = conf.channel_layers_from_env()["default"]["CONFIG"]["hosts"]
    assert [host["address"] for host in hosts] == urls


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"RABBITMQ_URL": "rabbitmq:5672"},
            "RABBITMQ_URL='rabbitmq:5672': it has no scheme. Expected amqp://",
        ),
        ({"RABBITMQ_URL": "amqp://u:s3cret@:5672/"}, "RABBITMQ_URL='amqp://u:***@:5672/': it names no host"),
        ({"RABBITMQ_URL": "http://broker"}, "its scheme 'http' is not one of amqp, amqps"),
        ({"RABBITMQ_HOST": "amqp://broker"}, "RABBITMQ_HOST='amqp://broker': expected a host name"),
        (
            {"RABBITMQ_HOST": "broker", "RABBITMQ_PORT": "0"},
            "RABBITMQ_PORT must be a port number from 1 to 65535, not '0'",
        ),
    ],
)
def test_a_malformed_rabbitmq_server_is_named(clean_layer_env, env, expected):
    clean_layer_env.setenv("CHANNEL_BACKEND", "rabbitmq")
    for name, value in env.items():
        clean_layer_env.setenv(name, value)
    with pytest.raises(ImproperlyConfigured) as raised:
        conf.channel_layers_from_env()
    assert expected in str(raised.value) and "s3cret" not in str(raised.value)


def test_a_malformed_postgres_layer_url_is_named_and_libpq_forms_pass(clean_layer_env):
    clean_layer_env.setenv("CHANNEL_BACKEND", "postgres")
    clean_layer_env.setenv("DATABASE_URL", "sqlite:///db.sqlite3")
    with pytest.raises(
        ImproperlyConfigured, match=r"DATABASE_URL='sqlite:///db.sqlite3': its scheme 'sqlite'"
    ):
        conf.channel_layers_from_env()
    clean_layer_env.setenv("POSTGRES_LAYER_URL", "postgresql://u:s3cret@db:port/chat")
    with pytest.raises(
        ImproperlyConfigured, match=r"^POSTGRES_LAYER_URL='postgresql://u:\*\*\*@db:port/chat'"
    ):
        conf.channel_layers_from_env()
    for url in ("postgresql:///chat", "postgres://u:p@db:5432/chat?sslmode=require", "host=db dbname=chat"):
        clean_layer_env.setenv("POSTGRES_LAYER_URL", url)
        assert conf.channel_layers_from_env()["default"]["CONFIG"]["url"] == url


def test_layer_numbers_have_bounds(clean_layer_env):
    clean_layer_env.setenv("REDIS_URLS", "redis://a:6379/0")
    clean_layer_env.setenv("CHANNEL_LAYER_CAPACITY", "0")
    with pytest.raises(
        ImproperlyConfigured, match=r"CHANNEL_LAYER_CAPACITY must be a whole number of messages >= 1, not '0'"
    ):
        conf.channel_layers_from_env()


def test_masked_hides_every_kind_of_password():
    assert conf.masked("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert conf.masked("redis://user:s3cret@h") == "redis://user:***@h"
    assert conf.masked("redis://s3cret@h") == "redis://***@h"
    assert conf.masked("redis://:p/ss@h") == "redis://:***@h"
    assert conf.masked("redis://h/0?password=s3cret&db=1") == "redis://h/0?password=***&db=1"
    assert conf.masked("host=db password=s3cret dbname=chat") == "host=db password=*** dbname=chat"
    assert conf.masked("127.0.0.1:6379") == "127.0.0.1:6379"


# --- typos ------------------------------------------------------------------------------


def test_a_variable_that_looks_like_one_the_kit_reads_is_a_typo():
    env = {
        "REDIS_ULR": "redis://a",
        "CHANNEL_LAYER_CAPCITY": "5",
        "redis_urls": "redis://b",
        "REDIS_URL": "redis://c",  # read: not a typo
        "DATABASE_URI": "",  # empty: as compose passes what .env leaves empty
        "HOSTNAME": "box",
        "HEALTHCHECK_INTERVAL": "10s",  # the kit's compose files', not the package's
    }
    assert variables.lookalikes(env) == [
        ("CHANNEL_LAYER_CAPCITY", "CHANNEL_LAYER_CAPACITY"),
        ("REDIS_ULR", "REDIS_URL"),
        ("redis_urls", "REDIS_URLS"),
    ]


def test_a_typo_is_a_log_warning_once_and_a_system_check_warning(monkeypatch, caplog):
    from django.core.checks import run_checks

    from channels_kit.checks import LOOKALIKE_ID

    monkeypatch.setenv("REDIS_ULR", "redis://a")
    monkeypatch.setattr(variables, "_warned", set())
    with caplog.at_level("WARNING", logger="channels_kit.conf"):
        conf.channel_layers_from_env()
        conf.channel_layers_from_env()
    said = [r.getMessage() for r in caplog.records if r.name == "channels_kit.conf"]
    assert said == [
        "REDIS_ULR is set, but channels_kit reads no variable of that name: did you mean REDIS_URL?"
    ]
    [warning] = [m for m in run_checks() if m.id == LOOKALIKE_ID]
    assert "REDIS_ULR" in warning.msg and "REDIS_URL" in warning.hint


# --- install hints, layer servers -------------------------------------------------------


def test_install_hints_name_the_checkout_not_an_index():
    assert conf.install_hint("redis") == (
        "install the kit's 'redis' extra (pip install './app[redis]' from the root of the kit's checkout)"
    )


def test_layer_servers_are_named_with_passwords_masked(tmp_path):
    from channels.layers import InMemoryChannelLayer

    from channels_kit.layers.local import LocalChannelLayer
    from channels_kit.layers.redis import RedisChannelLayer

    layer = RedisChannelLayer(
        hosts=[{"address": "redis://:s3cret@a:6379/0"}, {"address": "redis://b:6379/0"}]
    )
    assert conf.layer_servers(layer) == ["redis://:***@a:6379/0", "redis://b:6379/0"]
    assert conf.layer_servers(LocalChannelLayer(path=tmp_path / "layer.sqlite3")) == [
        str(tmp_path / "layer.sqlite3")
    ]
    assert conf.layer_servers(InMemoryChannelLayer()) == []
