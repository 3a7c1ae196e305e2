"""The Swarm stack file that scripts/swarm-up deploys, rendered from the kit's compose files
by `docker compose config` and scripts/swarm-stack (no Docker daemon needed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRETS = {
    "DJANGO_SECRET_KEY": "secret-key-for-the-test",
    "POSTGRES_PASSWORD": "pg-password-for-the-test",
    "RABBITMQ_PASSWORD": "mq-password-for-the-test",
    "REDIS_PASSWORD": "redis-password-for-the-test",
    "DEMO_PASSWORD": "demo-password-for-the-test",
}


def render(tmp_path: Path, mode: str, **env: str) -> tuple[str, dict]:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in SECRETS.items()))
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
            "compose/swarm.yaml",
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
        ["python3", "scripts/swarm-stack", "st"],
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
        assert value not in text
    services = stack["services"]
    assert {"redis-1", "redis-2", "redis-3", "db", "migrate", "daphne", "worker", "nginx"} <= set(services)
    for name, service in services.items():
        environment = service.get("environment", {})
        for variable in SECRETS:
            assert variable not in environment, (name, variable)
        for variable, path in environment.items():
            if variable.endswith("_PASSWORD_FILE") or variable == "DJANGO_SECRET_KEY_FILE":
                secret = path.removeprefix("/run/secrets/")
                assert secret in {s["source"] for s in service["secrets"]}, (name, variable)
    assert services["redis-2"]["environment"]["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
    assert "REDISCLI_AUTH" not in services["redis-2"]["environment"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    # The relay's Daphne runs no project: no Django secret, no database password.
    if mode == "relay":
        assert {"DJANGO_SECRET_KEY_FILE", "POSTGRES_PASSWORD_FILE"}.isdisjoint(
            services["daphne"]["environment"]
        )
    assert stack["secrets"]["redis_password"] == {"external": True, "name": "st_redis_password"}


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


def test_a_registry_names_the_kits_images_only(tmp_path):
    _, stack = render(
        tmp_path, "relay", SWARM_REGISTRY="10.0.0.1:5000", POSTGRES_IMAGE="postgres:15-bookworm"
    )
    images = {name: service["image"] for name, service in stack["services"].items()}
    assert images["worker"].startswith("10.0.0.1:5000/channels-kit/app:")
    assert images["daphne"].startswith("10.0.0.1:5000/channels-kit/relay:")
    assert images["redis-1"].startswith("10.0.0.1:5000/channels-kit/redis:")
    assert images["db"] == "postgres:15-bookworm"
