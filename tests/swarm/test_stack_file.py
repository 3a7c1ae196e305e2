"""The Swarm stack file that deploy/swarm/up deploys, rendered from the kit's compose files
by `docker compose config` and deploy/swarm/stack.py (no Docker daemon needed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The stack's secret files (scripts/init-env makes them in SECRETS_DIR), with test values.
SECRETS = {
    "django_secret_key": "secret-key-for-the-test",
    "postgres_password": "pg-password-for-the-test",
    "postgres_layer_url": "",
    "rabbitmq_password": "mq-password-for-the-test",
    "rabbitmq_default_pass.conf": "default_pass = mq-password-for-the-test",
    "redis_admin_password": "redis-admin-password-for-the-test",
    "redis_worker_password": "redis-worker-password-for-the-test",
    "redis_relay_password": "redis-relay-password-for-the-test",
    "demo_password": "demo-password-for-the-test",
}
# What these were as variables of an older .env: none may be in a service's environment.
SECRET_VARIABLES = ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "REDIS_PASSWORD")


def render(tmp_path: Path, mode: str, **env: str) -> tuple[str, dict]:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for name, value in SECRETS.items():
        (secrets / name).write_text(value)
    env_file = tmp_path / ".env"
    env_file.write_text(f"SECRETS_DIR={secrets}\n")
    files = ["-f", "compose.yaml"] + (["-f", "compose/relay.yaml"] if mode == "relay" else [])
    # None of the caller's settings (make test exports HTTP_PORT, REDIS_SHARDS, ...): the defaults.
    clean = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    config = subprocess.run(
        [
            "docker",
            "compose",
            "--env-file",
            str(env_file),
            *files,
            "-f",
            "deploy/swarm/compose.yaml",
            "config",
            "--format",
            "json",
        ],
        cwd=REPO,
        env={**clean, "COMPOSE_PROFILES": "redis,redis-3", "REDIS_SHARDS": "3", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stack = subprocess.run(
        ["python3", "deploy/swarm/stack.py", "st"],
        input=config,
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return stack, json.loads(stack)


@pytest.mark.parametrize("mode", ["direct", "relay"])
def test_no_secret_value_reaches_the_stack_file(tmp_path, mode):
    text, stack = render(tmp_path, mode)
    for value in SECRETS.values():
        assert not value or value not in text
    services = stack["services"]
    assert {"redis-1", "redis-2", "redis-3", "db", "migrate", "daphne", "worker", "nginx"} <= set(services)
    for name, service in services.items():
        environment = service.get("environment", {})
        for variable in SECRET_VARIABLES:
            assert variable not in environment, (name, variable)
        for variable, path in environment.items():
            if variable.endswith("_PASSWORD_FILE") or variable == "DJANGO_SECRET_KEY_FILE":
                secret = path.removeprefix("/run/secrets/")
                assert secret in {s["source"] for s in service["secrets"]}, (name, variable)
    # The shards' ACL users' passwords, as files (images/redis/start-redis); no environment.
    shard_secrets = {s["source"] for s in services["redis-2"]["secrets"]}
    assert shard_secrets == {"redis_admin_password", "redis_worker_password", "redis_relay_password"}
    assert "REDISCLI_AUTH" not in services["redis-2"].get("environment", {})
    assert services["worker"]["environment"]["REDIS_USERNAME"] == "worker"
    assert services["db"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    # The relay's Daphne runs no project: no Django secret, no database password.
    if mode == "relay":
        assert {"DJANGO_SECRET_KEY_FILE", "POSTGRES_PASSWORD_FILE"}.isdisjoint(
            services["daphne"]["environment"]
        )
        assert services["daphne"]["environment"]["REDIS_USERNAME"] == "relay"
    assert stack["secrets"]["redis_relay_password"] == {"external": True, "name": "st_redis_relay_password"}


def test_swarm_specifics(tmp_path):
    _, stack = render(tmp_path, "relay")
    services = stack["services"]
    for service in services.values():
        assert {"build", "depends_on", "pull_policy", "profiles", "restart"}.isdisjoint(service)
    assert services["nginx"]["ports"] == [
        {"target": 8080, "published": 8000, "protocol": "tcp", "mode": "host"}
    ]
    assert services["nginx"]["deploy"]["mode"] == "global"
    assert services["migrate"]["deploy"]["mode"] == "replicated-job"
    for name in ("daphne", "worker", "redis-1", "db"):
        assert services[name]["deploy"]["endpoint_mode"] == "dnsrr"
    update = services["worker"]["deploy"]["update_config"]
    assert update["order"] == "start-first" and update["failure_action"] == "rollback"
    assert services["redis-3"]["deploy"]["placement"]["constraints"] == [
        "node.labels.channels-kit.redis == true"
    ]
    assert stack["networks"]["default"] == {"name": "st_default", "driver": "overlay", "attachable": True}
    # `docker stack deploy` ignores `tmpfs:`: a read-only service gets its tmpfs as a mount.
    for service in services.values():
        assert "tmpfs" not in service
        if service.get("read_only"):
            assert any(v.get("type") == "tmpfs" and v["target"] == "/tmp" for v in service["volumes"])
    assert {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 16 * 2**20}} in services["redis-1"][
        "volumes"
    ]
    assert not services["nginx"].get("read_only")


APP_SERVICES = ("migrate", "static", "worker", "worker-slow")


def test_the_static_job_publishes_on_every_node_for_that_nodes_nginx(tmp_path):
    _, stack = render(tmp_path, "relay")
    services = stack["services"]
    static, nginx, migrate = services["static"], services["nginx"], services["migrate"]
    assert static["deploy"]["mode"] == "global-job"
    assert static["deploy"]["restart_policy"]["condition"] == "on-failure"
    assert static["image"] == services["worker"]["image"]
    assert [(v["source"], v["target"]) for v in static["volumes"] if v["type"] != "tmpfs"] == [
        ("static-files", "/srv/static")
    ]
    (served,) = [v for v in nginx["volumes"] if v["target"] == "/srv/static"]
    assert served["source"] == "static-files" and served["read_only"] is True
    assert nginx["environment"]["STATIC_URL_PATH"] == "/static/"
    # The migrations job runs on one node: it publishes nothing (the static job does).
    assert migrate["environment"]["STATIC_PUBLISH_DIR"] == ""
    assert "static-files" not in {v.get("source") for v in migrate.get("volumes", [])}
    # Through the image's entrypoint would need a role; the job copies the files itself, and
    # `docker stack deploy` turns $$ into $ (docker compose config keeps it escaped).
    assert static["entrypoint"][:2] == ["sh", "-c"]
    assert static["entrypoint"][2].startswith("cp -R /app/static/. /srv/static/ && echo ")
    assert "$$(find /app/static -type f | wc -l)" in static["entrypoint"][2]


@pytest.mark.parametrize("mode", ["direct", "relay"])
def test_the_projects_image_runs_every_app_service(tmp_path, mode):
    env = {"PROJECT_IMAGE": "channels-kit/app-mysite", "APP_TAG": "v3"}
    _, stack = render(tmp_path, mode, **env)
    services = stack["services"]
    for name in APP_SERVICES + (("daphne",) if mode == "direct" else ()):
        assert services[name]["image"] == "channels-kit/app-mysite:v3", name
    if mode == "relay":
        assert services["daphne"]["image"].startswith("channels-kit/relay:")
    _, stack = render(tmp_path, mode, SWARM_REGISTRY="10.0.0.1:5000", **env)
    for name in APP_SERVICES:
        assert stack["services"][name]["image"] == "10.0.0.1:5000/channels-kit/app-mysite:v3", name
    # APP_IMAGE (an image named in its own registry) wins over the project's.
    _, stack = render(tmp_path, mode, APP_IMAGE="registry.example.com/mysite", **env)
    for name in APP_SERVICES:
        assert stack["services"][name]["image"] == "registry.example.com/mysite:v3", name


def test_the_worker_tiers_follow_the_project(tmp_path):
    def tiers(**env: str) -> tuple[int, int, dict, dict]:
        _, stack = render(tmp_path, "relay", **env)
        worker, slow = stack["services"]["worker"], stack["services"]["worker-slow"]
        return (
            worker["deploy"]["replicas"],
            slow["deploy"]["replicas"],
            worker["environment"],
            slow["environment"],
        )

    # The demo, as `make build` derives it: a slow channel, a tier for it.
    workers, slow, worker_env, slow_env = tiers(
        PROJECT_WORKERS="1", PROJECT_SLOW_WORKERS="1", PROJECT_SLOW_CHANNELS="thumbnail"
    )
    assert (workers, slow) == (1, 1)
    assert worker_env["WORKER_EXCLUDE_CHANNELS"] == "thumbnail"
    assert slow_env["WORKER_ONLY_CHANNELS"] == "thumbnail"
    for environment in (worker_env, slow_env):
        assert not {"WORKER_ONLY_CHANNELS", "WORKER_EXCLUDE_CHANNELS"} <= set(environment)
    # A project without a slow channel: no task for worker-slow.
    workers, slow, worker_env, _ = tiers(PROJECT_WORKERS="1", PROJECT_SLOW_WORKERS="0")
    assert (workers, slow) == (1, 0) and worker_env["WORKER_EXCLUDE_CHANNELS"] == ""
    # Nothing derived (a stack file rendered before `make build`): two general workers, as
    # `make build` derives for a project that routes something.
    assert tiers()[:2] == (2, 0)
    # The user's counts win over the derived ones.
    assert tiers(WORKER_REPLICAS="3", SLOW_WORKER_REPLICAS="2", PROJECT_SLOW_WORKERS="0")[:2] == (3, 2)


def test_swarm_nodes_loads_the_projects_image(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("PROJECT_IMAGE=channels-kit/app-mysite\nAPP_TAG=v3\nPOSTGRES_IMAGE=pg:15\n")
    clean = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    images = subprocess.run(
        ["deploy/swarm/nodes", "images"],
        cwd=REPO,
        env={**clean, "ENV_FILE": str(env_file)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert images == [
        "channels-kit/app-mysite:v3",
        "channels-kit/relay:dev",
        "channels-kit/redis:dev",
        "channels-kit/nginx:dev",
        "pg:15",
    ]


def test_a_registry_names_the_kits_images_only(tmp_path):
    _, stack = render(
        tmp_path, "relay", SWARM_REGISTRY="10.0.0.1:5000", POSTGRES_IMAGE="postgres:15-bookworm"
    )
    images = {name: service["image"] for name, service in stack["services"].items()}
    assert images["worker"].startswith("10.0.0.1:5000/channels-kit/app:")
    assert images["daphne"].startswith("10.0.0.1:5000/channels-kit/relay:")
    assert images["redis-1"].startswith("10.0.0.1:5000/channels-kit/redis:")
    assert images["db"] == "postgres:15-bookworm"
