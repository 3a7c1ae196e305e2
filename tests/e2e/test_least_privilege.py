"""Least privilege (#27): the stack's secrets are files, never in what `docker inspect` or an
image's history shows; every container drops all capabilities, cannot gain privileges and,
where promised, has a read-only root file system; Redis answers nobody without a password and
the relay's and the workers' users are refused every command outside the channel layer's.

The values looked for are the stack's own, read from its secrets directory (scripts/init-env);
the rest of the suite proves that the layer works under these users.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess

import pytest

from conftest import ASGI_MODE, compose, parts, secrets_dir, service_exec

pytestmark = parts("direct", "relay")

# Services whose root file system is read-only (compose.yaml); RabbitMQ's is not (docs/security.md).
READ_ONLY = {"redis-1", "redis-2", "redis-3", "redis-4", "db", "daphne", "worker", "worker-slow", "uwsgi"}
READ_ONLY |= {"migrate", "nginx", "prometheus"}
# Commands a compromised relay or worker could wreck or take over a shard with.
REFUSED = (
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "dir", "/tmp"),
    ("KEYS", "*"),
    ("CLIENT", "LIST"),
    ("SCRIPT", "FLUSH"),
    ("MODULE", "LIST"),
    ("ACL", "LIST"),
    ("REPLICAOF", "NO", "ONE"),
    ("SAVE",),
)
# How ACL LOG names them (its `object`: a container command with its subcommand).
REFUSED_OBJECTS = {"flushall", "flushdb", "config|get", "config|set", "keys", "client|list"}
REFUSED_OBJECTS |= {"script|flush", "module|list", "acl|list", "replicaof", "save"}
LAYER_USERS = ("worker", "relay")


def secret_values() -> dict[str, str]:
    """Every secret of the stack (file name -> value); the RabbitMQ conf.d file holds one of them."""
    values = {}
    for path in secrets_dir().iterdir():
        value = path.read_text().strip()
        if value and not path.name.endswith(".conf"):
            values[path.name] = value
    assert {"django_secret_key", "postgres_password", "redis_relay_password"} <= set(values), values.keys()
    return values


def containers() -> dict[str, dict]:
    """`docker inspect` of every running container of the stack, by container name."""
    ids = compose("ps", "--quiet").stdout.split()
    assert ids, "the stack runs no container"
    out = subprocess.run(["docker", "inspect", *ids], check=True, capture_output=True, text=True).stdout
    return {item["Name"].lstrip("/"): item for item in json.loads(out)}


def service_of(container: dict) -> str:
    return container["Config"]["Labels"]["com.docker.compose.service"]


def test_no_container_and_no_image_shows_a_secret():
    secrets = secret_values()
    found = containers()
    for name, container in found.items():
        shown = json.dumps(container)
        leaked = [secret for secret, value in secrets.items() if value in shown]
        assert not leaked, f"docker inspect {name} shows {leaked}"
    for image in {container["Image"] for container in found.values()}:
        history = subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        config = subprocess.run(
            ["docker", "image", "inspect", image], check=True, capture_output=True, text=True
        )
        leaked = [secret for secret, value in secrets.items() if value in history + config.stdout]
        assert not leaked, f"image {image} holds {leaked}"
    # The secrets do reach the processes, as files: the app's and the shards'.
    mounts = {
        service_of(container): {mount["Destination"] for mount in container["Mounts"]}
        for container in found.values()
    }
    assert "/run/secrets/redis_admin_password" in mounts["redis-1"]
    project = "worker" if ASGI_MODE == "relay" else "daphne"
    assert {"/run/secrets/django_secret_key", "/run/secrets/redis_worker_password"} <= mounts[project]
    if ASGI_MODE == "relay":
        # The relay runs no project code: none of the project's secrets, its own Redis user.
        assert "/run/secrets/redis_relay_password" in mounts["daphne"]
        assert not {"/run/secrets/django_secret_key", "/run/secrets/postgres_password"} & mounts["daphne"]


def test_the_secrets_directory_is_its_owners_alone():
    directory = secrets_dir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700, oct(directory.stat().st_mode)
    for path in directory.iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert not mode & (stat.S_IWGRP | stat.S_IWOTH), (path.name, oct(mode))


def test_every_container_drops_its_capabilities_and_cannot_gain_privileges():
    for name, container in containers().items():
        host = container["HostConfig"]
        assert [cap.upper().removeprefix("CAP_") for cap in host["CapDrop"] or []] == ["ALL"], name
        assert not host["CapAdd"], (name, host["CapAdd"])
        assert any(opt.startswith("no-new-privileges") for opt in host["SecurityOpt"] or []), name
        if service_of(container) in READ_ONLY:
            assert host["ReadonlyRootfs"] is True, name
        # What the container's first process really has: no capability, no way to gain one.
        status = subprocess.run(
            ["docker", "exec", container["Id"], "cat", "/proc/1/status"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0, (name, fields["CapEff"])
        assert fields["NoNewPrivs"].strip() == "1", name


@pytest.mark.parametrize("service", ["worker", "nginx", "redis-1"])
def test_the_root_file_system_refuses_writes(service):
    refused = service_exec(service, "sh", "-c", "echo x > /kit-write-test", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused


def redis_as(user: str, *command: str) -> str:
    """``command``'s answer from redis-1 to ``user``, whose password goes through stdin (never
    on a command line or in an environment that `docker inspect` shows)."""
    password = secret_values()[f"redis_{user}_password"]
    ids = compose("ps", "--quiet", "redis-1").stdout.split()
    script = 'read -r password; REDISCLI_AUTH="$password" exec redis-cli --user "$0" "$@"'
    answer = subprocess.run(
        ["docker", "exec", "-i", ids[0], "sh", "-c", script, user, *command],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    return (answer.stdout + answer.stderr).strip()


@pytest.mark.parametrize("user", LAYER_USERS)
def test_the_layers_redis_users_are_refused_what_the_layer_never_does(user):
    assert redis_as(user, "PING") == "PONG"
    # A channel layer's send, as the layer's script does it: allowed.
    key = f"asgi:least-privilege-{user}"
    script = "redis.call('ZADD', KEYS[1], 1, ARGV[1]); redis.call('EXPIRE', KEYS[1], 5); return 1"
    assert redis_as(user, "EVAL", script, "1", key, "message") == "1"
    for command in REFUSED:
        answer = redis_as(user, *command)
        assert "NOPERM" in answer, (user, command, answer)
    # A script runs with its caller's rights: no way around the list through EVAL.
    answer = redis_as(user, "EVAL", "return redis.call('FLUSHALL')", "0")
    assert "NOPERM" in answer or "can't run this command" in answer, answer


def test_redis_answers_nobody_without_a_password_and_no_layer_command_was_refused():
    # --user without a password: the container's redis-cli sends no credentials at all.
    anonymous = compose("exec", "-T", "redis-1", "redis-cli", "--user", "default", "ping", check=False)
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr, anonymous
    # Three users; the layer's two with named commands only (Redis shows MULTI, EXEC, DISCARD,
    # WATCH and UNWATCH, all of them named, as their category @transaction).
    users = compose("exec", "-T", "redis-1", "redis-cli", "ACL", "LIST").stdout.splitlines()
    assert sorted(line.split()[1] for line in users) == ["default", "relay", "worker"], users
    for line in users:
        if line.split()[1] in LAYER_USERS:
            assert " -@all " in f" {line} ", line
            assert set(re.findall(r"\+@(\S+)", line)) <= {"transaction"}, line
    # The admin (redis-cli in the container logs in as it) sees every refusal so far: none of
    # the layer's own commands (the rest of the suite ran under these users) may be among them.
    for shard in ("redis-1", "redis-2"):
        log = compose("exec", "-T", shard, "redis-cli", "--json", "ACL", "LOG", "128").stdout
        refused = [
            entry
            for entry in json.loads(log or "[]")
            if entry.get("username") in LAYER_USERS and entry.get("object", "").lower() not in REFUSED_OBJECTS
        ]
        assert not refused, f"{shard} refused the layer: {refused}"
