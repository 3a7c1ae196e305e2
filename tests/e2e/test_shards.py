"""REDIS_SHARDS: how many Redis servers carry the channel layer, and that all of them do."""

import os
import re
import shutil
import stat
import subprocess

from conftest import ENV_FILE, REPO, compose, parts, run_task

pytestmark = parts("direct")


def _calls(service: str, command: str) -> int:
    stats = compose("exec", "-T", service, "redis-cli", "info", "commandstats").stdout
    match = re.search(rf"^cmdstat_{command}:calls=(\d+)", stats, re.MULTILINE)
    return int(match.group(1)) if match else 0


def test_every_shard_of_the_running_stack_carries_traffic():
    urls = compose("exec", "-T", "daphne", "printenv", "REDIS_URLS").stdout.strip().split(",")
    shards = [url.split("//")[1].split(":")[0] for url in urls]
    assert len(shards) >= 2, urls
    before = {shard: _calls(shard, "eval") for shard in shards}
    for n in range(4 * len(shards)):
        assert run_task({"channel": "tasks", "n": n})["status"] == "done"
    for shard in shards:
        # Sends are atomic scripts (EVAL), spread round-robin over every shard.
        assert _calls(shard, "eval") > before[shard], f"{shard} received no sends"
        # Workers wait on every shard at once, so each one sees blocking reads.
        assert _calls(shard, "bzpopmin") > 0, f"nobody reads {shard}"


def init_env(tmp_path, **settings: str) -> subprocess.CompletedProcess:
    """scripts/init-env on a copy of the stack's env file, with ``settings`` in the environment."""
    env_file = tmp_path / ".env"
    shutil.copy(ENV_FILE, env_file)
    # Secrets of its own: the copy must not rewrite the stack's (SECRETS_DIR of the env file).
    env = os.environ | {"ENV_FILE": str(env_file), "SECRETS_DIR": str(tmp_path / "secrets"), **settings}
    return subprocess.run([str(REPO / "scripts/init-env")], env=env, capture_output=True, text=True)


def services_of(tmp_path, **settings: str) -> tuple[list[str], str]:
    """The services compose runs after init-env with ``settings``, and the env file it wrote."""
    assert init_env(tmp_path, **settings).returncode == 0
    env_file = tmp_path / ".env"
    config = subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), "config", "--services"],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k not in ("CHANNEL_BACKEND", "REDIS_SHARDS")},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return config, env_file.read_text()


def test_redis_shards_four_configures_four_servers(tmp_path):
    config, text = services_of(tmp_path, CHANNEL_BACKEND="redis", REDIS_SHARDS="4")
    assert {"redis-1", "redis-2", "redis-3", "redis-4"} <= set(config)
    assert "REDIS_URLS=" + ",".join(f"redis://redis-{n}:6379/0" for n in range(1, 5)) in text
    assert "COMPOSE_PROFILES=redis,redis-3,redis-4" in text


def test_local_backend_starts_no_redis(tmp_path):
    config, text = services_of(tmp_path, CHANNEL_BACKEND="local", REDIS_SHARDS="4")
    assert not [name for name in config if name.startswith("redis-")], config
    assert {"daphne", "worker", "worker-slow", "nginx"} <= set(config)
    assert re.search(r"^CHANNEL_BACKEND=local$", text, re.MULTILINE)
    assert re.search(r"^COMPOSE_PROFILES=$", text, re.MULTILINE)


def test_rabbitmq_backend_starts_rabbitmq_and_no_redis(tmp_path):
    config, text = services_of(tmp_path, CHANNEL_BACKEND="rabbitmq")
    assert "rabbitmq" in config and not [name for name in config if name.startswith("redis-")], config
    assert re.search(r"^COMPOSE_PROFILES=rabbitmq$", text, re.MULTILINE)
    # The password is a secret file, not a line of the env file.
    assert re.fullmatch(r"\S{20,}", (tmp_path / "secrets" / "rabbitmq_password").read_text())
    assert not re.search(r"^RABBITMQ_PASSWORD=", text, re.MULTILINE)


def test_postgres_backend_starts_no_server_of_its_own_and_only_it_gets_the_url(tmp_path):
    config, text = services_of(tmp_path, CHANNEL_BACKEND="postgres")
    assert "rabbitmq" not in config and not [name for name in config if name.startswith("redis-")], config
    assert re.search(r"^COMPOSE_PROFILES=$", text, re.MULTILINE)
    layer_url = tmp_path / "secrets" / "postgres_layer_url"  # a secret: it holds the password
    assert re.fullmatch(r"postgresql://chat:\S{20,}@db:5432/chat", layer_url.read_text())
    assert not re.search(r"^POSTGRES_LAYER_URL=", text, re.MULTILINE)
    services_of(tmp_path, CHANNEL_BACKEND="redis")
    assert layer_url.read_text() == ""


def test_unknown_channel_backend_is_refused(tmp_path):
    result = init_env(tmp_path, CHANNEL_BACKEND="kafka")
    assert result.returncode != 0
    assert "CHANNEL_BACKEND must be redis, rabbitmq, postgres or local" in result.stderr


def test_redis_shards_out_of_range_is_refused(tmp_path):
    result = init_env(tmp_path, REDIS_SHARDS="9")
    assert result.returncode != 0
    assert "REDIS_SHARDS must be 1, 2, 3 or 4" in result.stderr


def test_an_older_envs_secrets_move_to_their_files_unchanged(tmp_path):
    """An .env of before the secrets directory (its secrets as lines) keeps working: init-env
    moves each value, unchanged (the database volume keeps its password), into its file and
    takes the line out; REDIS_PASSWORD becomes the admin's. The directory is its owner's."""
    env_file = tmp_path / ".env"
    old = {"DJANGO_SECRET_KEY": "old-key", "POSTGRES_PASSWORD": "old-pg", "REDIS_PASSWORD": "old-redis"}
    kept = "\n".join(
        line for line in ENV_FILE.read_text().splitlines() if not line.startswith("SECRETS_DIR=")
    )
    env_file.write_text(kept + "\n" + "".join(f"{key}={value}\n" for key, value in old.items()))
    env = {k: v for k, v in os.environ.items() if k != "SECRETS_DIR"} | {"ENV_FILE": str(env_file)}
    result = subprocess.run([str(REPO / "scripts/init-env")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    secrets = tmp_path / ".env.secrets"
    files = {"DJANGO_SECRET_KEY": "django_secret_key", "POSTGRES_PASSWORD": "postgres_password"}
    files["REDIS_PASSWORD"] = "redis_admin_password"
    for key, name in files.items():
        assert (secrets / name).read_text() == old[key], name
        assert f"moved {key} from" in result.stderr
    text = env_file.read_text()
    assert not re.search(r"^(DJANGO_SECRET_KEY|POSTGRES_PASSWORD|REDIS_PASSWORD)=", text, re.M)
    assert f"SECRETS_DIR={secrets}" in text.splitlines()
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert len((secrets / "redis_relay_password").read_text()) >= 20  # new ones generated
