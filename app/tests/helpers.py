"""What several unit test modules share: waiting in a test's event loop, a worker whose
consumer holds its jobs, and a receiving process killed with SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable

from channels.consumer import AsyncConsumer

from channels_kit.observe.status import gather_status
from channels_kit.worker import KitWorker


def run(coroutine, timeout: float = 60):
    """``asyncio.run`` bounded by ``timeout``."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def send_jobs(layer, count: int, channel: str = "jobs", **extra) -> None:
    for n in range(count):
        await layer.send(channel, {"type": "job.run", "n": n, **extra})


async def drain_layer(layer, channel: str, timeout: float = 1.0) -> list[int]:
    """The ``n`` of every message still queued on ``channel``, in order."""
    found = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), timeout)
        except TimeoutError:
            return found
        found.append(message["n"])


def jobs_worker(application, layer, **options) -> KitWorker:
    """A KitWorker serving the channel ``jobs`` of ``layer``."""
    return KitWorker(application=application, channels=["jobs"], channel_layer=layer, **options)


class Blocker(AsyncConsumer):
    """Holds each job until the test sets ``release``."""

    started: list[int]
    release: asyncio.Event

    async def job_run(self, message):
        self.started.append(message["n"])
        await self.release.wait()


def blocker_app(started: list[int], release: asyncio.Event):
    return type("TestBlocker", (Blocker,), {"started": started, "release": release}).as_asgi()


class BlockedWorker:
    """``async with BlockedWorker(layer, jobs=3) as blocked``: a worker serving ``jobs`` (a
    heartbeat every 0.1 s) whose consumer holds each job until ``release()``; the jobs are
    queued and the first one held when the block starts; the worker stops cleanly at its end."""

    def __init__(self, layer, jobs: int) -> None:
        self.layer, self.jobs = layer, jobs
        self.started: list[int] = []
        self.released = asyncio.Event()
        self.worker = jobs_worker(blocker_app(self.started, self.released), layer, heartbeat_interval=0.1)

    async def __aenter__(self) -> BlockedWorker:
        self.server = asyncio.ensure_future(self.worker.arun())
        await send_jobs(self.layer, self.jobs)
        await wait_until(lambda: len(self.started) == 1)
        return self

    async def busy_status(self, poll: float = 0.05):
        """The layer's status once a heartbeat has published busy=1."""
        busy = None
        while busy is None or not busy.workers_busy:
            await asyncio.sleep(poll)
            busy = await gather_status(self.layer)
        return busy

    async def release(self) -> None:
        """Let the jobs through; returns once every one was handled."""
        self.released.set()
        await wait_until(lambda: self.worker.messages_handled == self.jobs)

    async def __aexit__(self, *exc) -> None:
        self.released.set()
        self.worker.request_stop("test")
        await asyncio.wait_for(self.server, 10)


# What a receiving process runs (after the lines that make its ``layer``): it prints the
# ``n`` of each message it receives.
PRINTING_RECEIVER = """
async def main():
    while True:
        message = await layer.receive("jobs")
        print(message["n"], flush=True)
asyncio.run(main())
"""


def kill_a_receiver_mid_receive(
    receiver: subprocess.Popen, layer, drained=None, timeout: float = 1.0, total: int = 300
) -> None:
    """Send ``total`` jobs on ``layer`` while ``receiver`` (running PRINTING_RECEIVER) takes
    them and SIGKILL it halfway; then drain what is still queued (through ``drained``, another
    layer on the same store, if given: ``layer`` is closed first). Nothing may come twice, and
    at most the message it held may be lost."""

    first: list[str] = []

    async def scenario() -> set[int]:
        for n in range(total):
            await layer.send("jobs", {"type": "job", "n": n})
            if n == total // 2:
                # Killed once it is busy: after it printed a message (a start-up slower than
                # any fixed pause, on a loaded machine, would kill it before it took one).
                first.append(await asyncio.wait_for(asyncio.to_thread(receiver.stdout.readline), 60))
                await asyncio.sleep(0.1)
                receiver.send_signal(signal.SIGKILL)
        receiver.wait(10)
        rest = layer if drained is None else drained
        if rest is not layer:
            await layer.close()
        left = set(await drain_layer(rest, "jobs", timeout))
        await rest.close()
        return left

    left = run(scenario())
    received = {int(line) for line in (first[0] + receiver.stdout.read()).split()}
    assert received, "the receiver was killed before it received anything"
    assert not received & left, "a message was delivered twice"
    lost = set(range(total)) - received - left
    assert len(lost) <= 1, f"lost {sorted(lost)}"
    print(f"SIGKILL mid-receive: {len(received)} received, {len(left)} still queued, {len(lost)} lost")
