"""Runs last: `make down` removes every container of the stack (after printing the stack's
logs when an earlier test failed: scripts/test's own dump comes after, with nothing left)."""

import os
import subprocess

from conftest import REPO, compose, parts

pytestmark = parts("direct", "local", "rabbitmq", "postgres")


def test_make_down_leaves_no_container(request, capsys):
    if request.session.testsfailed:
        with capsys.disabled():
            print("\n--- an earlier test failed: the stack's containers and their last logs")
            for command in (("ps", "--all"), ("logs", "--no-color", "--tail=80")):
                out = compose(*command, check=False)
                print(out.stdout + out.stderr)
    project = os.environ.get("COMPOSE_PROJECT_NAME", "channels-kit")
    subprocess.run(["make", "down"], cwd=REPO, check=True, timeout=180)
    left = subprocess.run(
        ["docker", "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={project}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert left == [], f"containers left after make down: {left}"
