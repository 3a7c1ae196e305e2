"""The channel backend the stack runs is the one CHANNEL_BACKEND names, in every process.

redis: the shards run and every app process uses the sharded Redis layer. local: no Redis
container runs; Daphne and both worker services share one same-host layer file through the
channel-layer volume (each process registers itself in it). postgres: no server of its own;
the layer's tables live in the stack's database.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import ENV_FILE, REPO, compose, http, parts, service_exec, service_hosts

pytestmark = parts("direct", "local", "rabbitmq", "postgres", "relay")

LAYER_CLASSES = {
    "redis": "channels_kit.layers.redis.layer.RedisChannelLayer",
    "local": "channels_kit.layers.local.layer.LocalChannelLayer",
    "rabbitmq": "channels_kit.layers.rabbitmq.layer.RabbitMQChannelLayer",
    "postgres": "channels_kit.layers.postgres.layer.PostgresChannelLayer",
}
APP_SERVICES = ("worker", "worker-slow")
PROCESS_HOSTS = (
    "import json, sqlite3; "
    "db = sqlite3.connect('file:/var/lib/channels-kit/layer/layer.sqlite3?mode=ro', uri=True); "
    "print(json.dumps([row[0] for row in db.execute('SELECT hostname FROM processes')]))"
)


def backend() -> str:
    lines = ENV_FILE.read_text().splitlines()
    values = [line.split("=", 1)[1] for line in lines if line.startswith("CHANNEL_BACKEND=")]
    return values[-1].strip() if values else "redis"


def layer_class(service: str) -> str:
    code = (
        "import django; django.setup(); from channels.layers import get_channel_layer; "
        "layer = get_channel_layer(); print(type(layer).__module__ + '.' + type(layer).__qualname__)"
    )
    return service_exec(service, "python", "manage.py", "shell", "-c", code).stdout.strip().splitlines()[-1]


def test_every_app_process_uses_the_configured_backend():
    for service in APP_SERVICES:
        assert layer_class(service) == LAYER_CLASSES[backend()], service


def test_only_the_configured_backends_server_runs():
    running = set(compose("ps", "--services", "--status", "running").stdout.split())
    shards = {name for name in running if name.startswith("redis-")}
    if backend() == "redis":
        assert {"redis-1", "redis-2"} <= shards, running
    else:
        assert not shards, f"Redis runs beside CHANNEL_BACKEND={backend()}: {sorted(shards)}"
    assert ("rabbitmq" in running) == (backend() == "rabbitmq"), running


@pytest.mark.skipif(backend() != "rabbitmq", reason="the stack runs another backend (CHANNEL_BACKEND)")
def test_rabbitmq_requires_its_generated_password_and_is_not_published():
    assert compose("port", "rabbitmq", "5672", check=False).stdout.strip() in ("", ":0")
    code = (
        "import asyncio, aiormq\n"
        "async def main():\n"
        "    try:\n"
        "        await aiormq.connect('amqp://guest:guest@rabbitmq:5672/')\n"
        "    except Exception as error:\n"
        "        print('refused', type(error).__name__)\n"
        "    else:\n"
        "        print('accepted')\n"
        "asyncio.run(main())\n"
    )
    assert service_exec("worker", "python", "-c", code).stdout.startswith("refused")


@pytest.mark.skipif(backend() != "local", reason="the stack runs another backend (CHANNEL_BACKEND)")
def test_local_layer_file_is_shared_by_daphne_and_both_worker_services():
    daphnes = service_hosts("daphne")
    served = set()
    for _ in range(10 * len(daphnes)):  # /readyz uses the layer; nginx spreads it over the replicas
        response = http("GET", "/readyz")
        assert response.status == 200, response.body
        served.add(response.headers["X-Served-By"].removeprefix("daphne/"))
        if served >= daphnes:
            break
    hosts = set(json.loads(service_exec("worker", "python", "-c", PROCESS_HOSTS).stdout))
    for service in ("daphne", *APP_SERVICES):
        assert service_hosts(service) & hosts, (service, hosts)


@pytest.mark.skipif(backend() != "postgres", reason="the stack runs another backend (CHANNEL_BACKEND)")
def test_postgres_layer_lives_in_the_stacks_database():
    query = "SELECT count(*) FROM channels_kit_workers"
    count = compose(
        "exec", "-T", "db", "sh", "-c", f'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -Atc "{query}"'
    ).stdout.strip()
    assert int(count) >= len(APP_SERVICES), "every worker publishes its state in the layer's tables"


@pytest.mark.skipif(backend() != "redis", reason="the stack runs another backend (CHANNEL_BACKEND)")
def test_redis_shards_require_the_generated_password_and_are_not_published():
    for shard in ("redis-1", "redis-2"):
        assert compose("port", shard, "6379", check=False).stdout.strip() in ("", ":0")
        # No password: the container's redis-cli logs in as admin only when told nobody else.
        anonymous = compose("exec", "-T", shard, "redis-cli", "--user", "default", "ping", check=False)
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr, anonymous
        assert compose("exec", "-T", shard, "redis-cli", "ping").stdout.strip() == "PONG"


def test_a_database_volume_of_another_env_is_caught_before_start(tmp_path):
    """A .env whose secret postgres_password is not the one the db-data volume was created with
    (a second checkout, a regenerated .env): scripts/check-database, which `make up` runs
    first, says so and names the two ways out; with the stack's own .env it passes."""
    other = tmp_path / ".env"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "postgres_password").write_text("not-the-volumes")
    text = re.sub(r"^SECRETS_DIR=.*$", f"SECRETS_DIR={secrets}", ENV_FILE.read_text(), flags=re.M)
    other.write_text(text)

    def check(env_file) -> subprocess.CompletedProcess:
        env = os.environ | {"ENV_FILE": str(env_file), "COMPOSE_ENV_FILES": str(env_file)}
        script = REPO / "scripts/check-database"
        return subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=180)

    refused = check(other)
    assert refused.returncode != 0
    assert "password authentication failed" in refused.stderr, refused.stderr
    assert "put back the .env" in refused.stderr and "make clean" in refused.stderr
    assert check(ENV_FILE).returncode == 0
