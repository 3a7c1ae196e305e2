#!/usr/bin/env python3
"""Turn `docker compose config --format json` output (stdin) into a Swarm stack file (stdout).

Usage: docker compose ... config --format json | deploy/swarm/stack.py STACK [SERVICE...] > stack.json
  SERVICE...: only these services (deploy/swarm/up deploys the Redis shards one by one first)

- keys `docker stack deploy` does not take, or ignores, go: build, depends_on,
  pull_policy, profiles, restart (Swarm's is deploy.restart_policy), container_name;
- the compose file's secrets (files of SECRETS_DIR, mounted at /run/secrets/<name>) become
  the Docker secrets ``<STACK>_<name>`` (made by deploy/swarm/up from those files), mounted
  at the same place; a secret still in an environment variable (SECRETS below: a compose
  file of one's own) leaves the environment the same way, with NAME_FILE pointing there
  (the images' entrypoints and the package read it);
- ``tmpfs`` entries (which `docker stack deploy` ignores: a read-only service could write
  nowhere) become tmpfs mounts of the same path and size (``tmpfs_mount``);
- the network becomes an attachable overlay named after the stack;
- with SWARM_REGISTRY set (host:port), the kit's images (channels-kit/..., and the local
  stand-ins channels-kit-local/...) are named in that registry, where the nodes pull them.
The output is JSON, which `docker stack deploy --compose-file` reads as YAML.
"""

from __future__ import annotations

import json
import os
import sys

# environment variable -> secret name; None: dropped (the secret file replaces it).
SECRETS: dict[str, str | None] = {
    "DJANGO_SECRET_KEY": "django_secret_key",
    "POSTGRES_PASSWORD": "postgres_password",
    "RABBITMQ_PASSWORD": "rabbitmq_password",
    "RABBITMQ_DEFAULT_PASS": "rabbitmq_password",
    "REDIS_PASSWORD": "redis_password",
    "DEMO_PASSWORD": "demo_password",
    "REDISCLI_AUTH": None,  # redis-cli gets it from the secret file (deploy/swarm/compose.yaml)
}
IGNORED_KEYS = ("build", "depends_on", "pull_policy", "profiles", "restart", "container_name")


def secrets_as_files(environment: dict) -> tuple[dict, list[str]]:
    """``environment`` with each secret's value replaced by ``<NAME>_FILE`` (its Swarm secret's
    path), and the secrets to mount."""
    mounts: list[str] = []
    for variable, secret in SECRETS.items():
        if variable not in environment:
            continue
        value = environment.pop(variable)
        if secret is None or value in (None, ""):
            continue
        environment[f"{variable}_FILE"] = f"/run/secrets/{secret}"
        if secret not in mounts:
            mounts.append(secret)
    return environment, mounts


SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def tmpfs_mount(entry: str) -> dict:
    """A compose ``tmpfs`` entry (``/tmp:mode=1777,size=16m``) as a tmpfs mount. Swarm's take
    a size only; the mount is root's, with the mode of the image's directory (1777 for
    /tmp): an owner, or another mode, cannot be kept, and is refused."""
    target, _, options = entry.partition(":")
    tmpfs: dict[str, int] = {}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key == "mode" and int(value, 8) == 0o1777:
            continue
        if key == "size":
            number, unit = value.rstrip("kmgKMG"), value[len(value.rstrip("kmgKMG")) :].lower()
            tmpfs["size"] = int(number) * SIZE_UNITS[unit]
        else:
            raise SystemExit(f"tmpfs {entry!r}: Swarm cannot keep {option!r} (size, and mode 1777, only)")
    return {"type": "tmpfs", "target": target, **({"tmpfs": tmpfs} if tmpfs else {})}


def convert(config: dict, stack: str, only: list[str] | None = None) -> dict:
    """The stack file for ``config`` (a rendered compose project)."""
    used: set[str] = set()
    services = {}
    for name, service in config["services"].items():
        if only and name not in only:
            continue
        if service.get("env_file"):
            # Compose folds env_file into environment (interpolated) in config's output; one
            # that did not would leave secrets to a file the stack reads uninterpolated.
            raise SystemExit(f"service {name}: `docker compose config` kept env_file (the kit pins 2.40.3)")
        service = {
            key: value for key, value in service.items() if key not in IGNORED_KEYS and value is not None
        }
        tmpfs = service.pop("tmpfs", None) or []
        if tmpfs:
            entries = [tmpfs] if isinstance(tmpfs, str) else tmpfs
            service["volumes"] = [*(service.get("volumes") or []), *map(tmpfs_mount, entries)]
        environment, mounts = secrets_as_files(dict(service.get("environment") or {}))
        if environment:
            service["environment"] = environment
        registry = os.environ.get("SWARM_REGISTRY", "").strip().rstrip("/")
        if registry and str(service.get("image", "")).startswith("channels-kit"):
            service["image"] = f"{registry}/{service['image']}"
        for port in service.get("ports") or []:
            if isinstance(port.get("published"), str):
                port["published"] = int(port["published"])  # the stack schema wants a number
        files = [dict(secret) for secret in service.get("secrets") or []]
        if mounts or files:
            # Mode 0444 (Swarm's default) inside the container: the images run as non-root users.
            known = {secret["source"] for secret in files}
            files += [{"source": secret, "target": secret} for secret in mounts if secret not in known]
            service["secrets"] = files
            used.update(secret["source"] for secret in files)
        services[name] = service
    stack_file: dict = {"services": services}
    networks = {}
    for name, network in (config.get("networks") or {}).items():
        networks[name] = {key: value for key, value in network.items() if key != "ipam"}
        networks[name].update(name=f"{stack}_{name}", driver="overlay", attachable=True)
    if networks:
        stack_file["networks"] = networks
    if config.get("volumes"):
        stack_file["volumes"] = config["volumes"]
    if used:
        stack_file["secrets"] = {
            secret: {"external": True, "name": f"{stack}_{secret}"} for secret in sorted(used)
        }
    return stack_file


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    json.dump(convert(json.load(sys.stdin), sys.argv[1], sys.argv[2:]), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
