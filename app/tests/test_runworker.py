"""``manage.py runworker`` as a real process against a real Redis (the test project in
``tests/workerproject``): SIGTERM drain, the grace-period deadline, tracebacks on stderr."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test.utils import override_settings

from channels_kit.layers.redis import RedisChannelLayer
from channels_kit.relay.interface import RelayApplication, RelaySettings
from tests.relay_client import http_request

APP_DIR = Path(__file__).resolve().parents[1]
# Start-up (Django, imports, Redis) plus the wait for the first marker, generously.
START_TIMEOUT = 30.0


@dataclass
class WorkerProject:
    """The test project, with its own channel prefix and marker directory."""

    redis_url: str
    prefix: str
    tmp: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def marks(self) -> Path:
        return self.tmp / "marks"

    def layer(self) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=[{"address": self.redis_url}], prefix=self.prefix)

    def start(
        self,
        *args: str,
        settings: str = "settings",
        env: dict[str, str] | None = None,
        command: str = "runworker",
    ) -> subprocess.Popen:
        """``python -m django runworker ARGS`` (the project's ``settings``, more ``env``), logs
        to files in ``tmp``."""
        env = os.environ | {
            "DJANGO_SETTINGS_MODULE": f"tests.workerproject.{settings}",
            "WORKER_TEST_PREFIX": self.prefix,
            "WORKER_TEST_DIR": str(self.marks),
            "WORKER_HEARTBEAT_FILE": str(self.tmp / "heartbeat"),
            "CHANNEL_LAYER_PREFIX": self.prefix,
            **(env or {}),
        }
        with open(self.tmp / "stdout", "wb") as out, open(self.tmp / "stderr", "wb") as err:
            command = [sys.executable, "-m", "django", command, *args]
            process = subprocess.Popen(command, cwd=APP_DIR, env=env, stdout=out, stderr=err)
        self.processes.append(process)
        return process

    def stdout(self) -> str:
        return (self.tmp / "stdout").read_text()

    def stderr(self) -> str:
        return (self.tmp / "stderr").read_text()

    def logs(self) -> str:
        return f"--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()}"

    def send(self, channel: str, *messages: dict) -> None:
        async def send_all():
            layer = self.layer()
            for message in messages:
                await layer.send(channel, message)

        asyncio.run(send_all())

    def receive(self, channel: str, timeout: float = 5.0) -> dict:
        return asyncio.run(asyncio.wait_for(self.layer().receive(channel), timeout))

    def wait_for_mark(self, name: str, timeout: float = START_TIMEOUT) -> Path:
        path = self.marks / name
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                pytest.fail(f"no {name} after {timeout} s\n{self.logs()}")
            time.sleep(0.05)
        return path


@pytest.fixture
def project(tmp_path, redis_url):
    project = WorkerProject(redis_url, f"test-runworker-{uuid.uuid4().hex[:8]}:", tmp_path)
    project.marks.mkdir()
    yield project
    for process in project.processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    asyncio.run(project.layer().flush())


def test_sigterm_lets_the_running_job_finish_and_leaves_the_queue_in_redis(project):
    worker = project.start("--exclude-channels=jobs.*", "--grace-period=20")
    project.send(
        "jobs", {"type": "job.run", "id": "a", "sleep": 5}, {"type": "job.run", "id": "b", "sleep": 0}
    )
    project.wait_for_mark("started-a")
    signalled = time.time()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, project.logs()

    # The job ran to its end after the signal: drained, not killed.
    assert (project.marks / "done-a").stat().st_mtime >= signalled
    # The message queued behind it was never taken: it waits in Redis for the next worker.
    assert not (project.marks / "started-b").exists()
    assert project.receive("jobs")["id"] == "b"
    out = project.stdout()
    routed = "routed ['jobs', 'jobs.slow'], relayed [], only [], exclude ['jobs.*']"
    assert f"runworker: serving jobs (named [], {routed})" in out
    assert out.count("runworker: serving") == 1  # the project's LOGGING shows it, the kit adds nothing
    assert "uvloop event loop)" in out  # EVENT_LOOP's default, the package being installed
    assert "SIGTERM: taking no new messages; 1 in flight" in out
    assert "drained: 1 message(s) handled, 0 failed" in out


def test_consumer_traceback_goes_to_stderr_and_the_next_message_is_served(project):
    worker = project.start("--only-channels=jobs")
    project.send("jobs", {"type": "job.fail", "id": "f"}, {"type": "job.run", "id": "g"})
    project.wait_for_mark("done-g")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, project.logs()

    assert (project.marks / "failed-f").exists()
    err = project.stderr()
    assert "ERROR channels_kit.worker.errors consumer on channel jobs (jobs#0) raised" in err
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: job f failed on purpose" in err
    assert "Traceback" not in project.stdout()
    assert "drained: 1 message(s) handled, 1 failed" in project.stdout()


def test_past_the_grace_period_the_job_is_abandoned_and_the_exit_is_immediate(project):
    worker = project.start("--only-channels=jobs", "--grace-period=1")
    project.send("jobs", {"type": "job.run", "id": "a", "sleep": 30})
    project.wait_for_mark("started-a")
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    status = worker.wait(timeout=20)
    # Not waiting for the 30 s job's thread: out well before it would end.
    assert time.monotonic() - signalled < 10
    assert status != 0, project.logs()
    assert not (project.marks / "done-a").exists()
    abandoned = "grace period (1s) over: abandoning 1 in-flight message(s): jobs#0: job.run for"
    assert abandoned in project.stdout()


def test_relay_mode_serves_relayed_requests_and_answers_abandoned_ones_at_once(project):
    worker = project.start("--relay", "--only-channels=http.*", "--http-concurrency=2", "--grace-period=1")

    async def scenario():
        relay = RelayApplication(project.layer(), RelaySettings(timeout=30, identity="daphne/test"))
        deadline = time.monotonic() + START_TIMEOUT
        status, _, body = await http_request(relay, "/hello")
        assert time.monotonic() < deadline
        assert (status, body) == (200, b"worker project: /hello")
        slow = asyncio.ensure_future(http_request(relay, "/slow?sleep=30"))
        await asyncio.sleep(1.5)  # the worker has it in hand
        worker.send_signal(signal.SIGTERM)
        started = time.monotonic()
        status, _, body = await slow
        # Past the 1 s grace period the worker gives up, and says so at once: no 30 s wait.
        assert (status, body) == (503, b"the worker stopped\n")
        assert time.monotonic() - started < 10

    asyncio.run(scenario())
    assert worker.wait(timeout=20) != 0, project.logs()
    out = project.stdout()
    relayed = "routed ['jobs', 'jobs.slow'], relayed ['http.request']"
    assert f"runworker: serving http.request (named [], {relayed}" in out
    assert "worker serving channels http.request x2" in out
    assert "abandoning 1 in-flight message(s): http.request#" in out


# --- processes that cannot share Channels' in-memory layer -----------------------------


@override_settings(ASGI_APPLICATION="tests.workerproject.asgi.application")
def test_a_worker_of_its_own_refuses_the_in_memory_layer():
    """The unit tests' settings use the in-memory layer: a separate worker would get nothing."""
    with pytest.raises(CommandError, match="in-memory one, which lives inside one process"):
        call_command("runworker", "jobs")


@pytest.mark.parametrize("env", [{"WEB_REPLICAS": "2"}, {"DYNO": "web.2"}])
@override_settings(ASGI_APPLICATION="tests.workerproject.asgi.application")
def test_one_process_mode_refuses_the_in_memory_layer_beside_other_web_processes(monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(CommandError, match="groups would silently miss the others' sockets"):
        call_command("runall")


# --- the first hour: a layer that does not answer, no LOGGING, a busy port ----------------


def test_a_worker_whose_layer_does_not_answer_exits_non_zero_naming_it(project):
    worker = project.start(
        settings="settings_env",
        env={"REDIS_URLS": "redis://:s3cret@127.0.0.1:1/0", "WORKER_LAYER_WAIT_SECONDS": "1"},
    )
    assert worker.wait(timeout=60) != 0, project.logs()
    err = project.stderr()
    assert "the channel layer (redis://:***@127.0.0.1:1/0) did not answer within 1 s" in err, project.logs()
    assert "(WORKER_LAYER_WAIT_SECONDS)" in err and "s3cret" not in project.logs()
    assert not (project.tmp / "heartbeat").exists()


def test_a_malformed_layer_url_stops_the_worker_before_it_starts(project):
    worker = project.start(settings="settings_env", env={"REDIS_URLS": "127.0.0.1:6379"})
    assert worker.wait(timeout=60) != 0, project.logs()
    assert "REDIS_URLS='127.0.0.1:6379': it has no scheme (redis://127.0.0.1:6379?)" in project.stderr()


def test_without_logging_settings_the_kits_lines_reach_stdout_once_and_typos_are_named(project):
    env = {"REDIS_URLS": project.redis_url, "REDIS_ULR": "redis://typo:6379/0"}
    worker = project.start("--exclude-channels=jobs.*", settings="settings_env", env=env)
    heartbeat = project.tmp / "heartbeat"
    deadline = time.monotonic() + START_TIMEOUT
    while not heartbeat.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert heartbeat.exists(), project.logs()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, project.logs()
    out = project.stdout()
    assert out.count("INFO channels_kit.management.commands.runworker runworker: serving jobs") == 1, out
    assert out.count("worker serving channels jobs x1") == 1, out
    assert "SIGTERM: taking no new messages" in out
    # The typo: a warning of the process and of the system check, naming the variable meant.
    assert "REDIS_ULR is set, but channels_kit reads no variable of that name: did you mean REDIS_URL?" in (
        project.logs()
    )
    assert "channels_kit.W001" in project.stderr()


def test_one_process_mode_exits_non_zero_when_its_port_is_taken(project):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runall = project.start("--bind", "127.0.0.1", "--port", str(port), command="runall")
        assert runall.wait(timeout=60) != 0, project.logs()
    assert f"runall cannot listen on 127.0.0.1:{port}" in project.stderr(), project.logs()
    assert "Address already in use" in project.stderr()
