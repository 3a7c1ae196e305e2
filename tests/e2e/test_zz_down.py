"""Runs last: `make down` removes every container of the stack."""

import os
import subprocess

from conftest import REPO, parts

pytestmark = parts("direct", "local", "rabbitmq", "postgres")


def test_make_down_leaves_no_container():
    project = os.environ.get("COMPOSE_PROJECT_NAME", "channels-kit")
    subprocess.run(["make", "down"], cwd=REPO, check=True, timeout=180)
    left = subprocess.run(
        ["docker", "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={project}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert left == [], f"containers left after make down: {left}"
