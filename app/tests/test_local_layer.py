"""The same-host layer beyond the conformance suite: real separate processes, a process killed
mid-receive, forks, and the refusals of a file that several machines would share."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from channels_kit.layers.local import LocalChannelLayer
from channels_kit.layers.local import store as local_store
from channels_kit.layers.local.store import SplitHostsError, Store
from tests.helpers import PRINTING_RECEIVER, kill_a_receiver_mid_receive


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "layer.sqlite3"


def child(code: str, path: Path, prefix: str, *args: str) -> subprocess.Popen:
    """A Python process of its own with a layer on ``path``."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from channels_kit.layers.local import LocalChannelLayer
        layer = LocalChannelLayer(path=sys.argv[1], prefix=sys.argv[2], capacity=1000)
        """
    ) + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", script, str(path), prefix, *args], stdout=subprocess.PIPE, text=True
    )


def test_another_process_sends_and_this_one_receives_everything(path):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    sender = child(
        """
        async def main():
            for n in range(200):
                await layer.send("jobs", {"type": "job", "n": n})
        asyncio.run(main())
        """,
        path,
        prefix,
    )
    layer = LocalChannelLayer(path=path, prefix=prefix)

    async def scenario():
        got = [(await asyncio.wait_for(layer.receive("jobs"), 10))["n"] for _ in range(200)]
        await layer.close()
        return got

    got = asyncio.run(scenario())
    assert sender.wait(30) == 0
    assert sorted(got) == list(range(200))


def test_a_process_killed_mid_receive_loses_at_most_what_it_had_taken(path):
    """SIGKILL of a receiving process: every message is received, still queued, or the one it
    held; the file stays consistent."""
    prefix = f"t{uuid.uuid4().hex[:6]}"
    receiver = child(PRINTING_RECEIVER, path, prefix)
    layer = LocalChannelLayer(path=path, prefix=prefix, capacity=1000)
    kill_a_receiver_mid_receive(
        receiver, layer, drained=LocalChannelLayer(path=path, prefix=prefix), timeout=0.5
    )
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _send_from_fork(layer: LocalChannelLayer) -> None:
    asyncio.run(layer.send("forked", {"type": "from.child"}))


# The parent already runs the layer's thread when it forks: the very case this test is about.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_process_opens_its_own_connection(path):
    layer = LocalChannelLayer(path=path, prefix=f"t{uuid.uuid4().hex[:6]}")

    async def receive_one():
        return await asyncio.wait_for(layer.receive("forked"), 10)

    async def scenario():
        await layer.send("warm", {"type": "parent"})  # the parent's connection exists
        process = multiprocessing.get_context("fork").Process(target=_send_from_fork, args=(layer,))
        process.start()
        message = await receive_one()
        process.join(10)
        await layer.close()
        return message, process.exitcode

    message, exitcode = asyncio.run(scenario())
    assert exitcode == 0 and message == {"type": "from.child"}


def test_fetched_messages_go_back_when_a_worker_stops(path):
    """Receives cancelled around each message's arrival, then the worker's requeue: another
    process gets every message that no waiter did, none twice."""
    layer = LocalChannelLayer(path=path, prefix=f"t{uuid.uuid4().hex[:6]}")
    rounds = 30

    async def scenario():
        got = []
        for n in range(rounds):
            waiter = asyncio.ensure_future(layer.receive("jobs"))
            await asyncio.sleep(0.001 * (n % 4))
            await layer.send("jobs", {"type": "job", "n": n})
            await asyncio.sleep(0.0005 * (n % 3))
            waiter.cancel()
            (outcome,) = await asyncio.gather(waiter, return_exceptions=True)
            if isinstance(outcome, dict):
                got.append(outcome["n"])
        requeued = await layer.requeue_pending()
        await layer.close()
        other = LocalChannelLayer(path=path, prefix=layer.prefix)
        rest = []
        try:
            while True:
                rest.append((await asyncio.wait_for(other.receive("jobs"), 0.5))["n"])
        except TimeoutError:
            pass
        await other.close()
        return got, requeued, rest

    got, requeued, rest = asyncio.run(scenario())
    assert sorted(got + rest) == list(range(rounds)), (got, rest)
    assert requeued <= len(rest)
    print(f"cancelled receives: {len(got)} delivered, {requeued} put back, {len(rest)} received elsewhere")


def test_a_message_fetched_for_a_cancelled_receive_goes_back_for_others(path, monkeypatch):
    """The receive is cancelled while the poller's fetch is under way (a slow disk): the message
    it brings, wanted by nobody here any more, goes back to the file (at once, or at the
    latest with requeue_pending) for another process, and is not delivered twice."""
    layer = LocalChannelLayer(path=path, prefix=f"t{uuid.uuid4().hex[:6]}")
    take = Store.take

    def slow_take(store, *args):
        time.sleep(0.3)
        return take(store, *args)

    async def scenario():
        await layer.send("jobs", {"type": "job"})
        monkeypatch.setattr(Store, "take", slow_take)
        waiter = asyncio.ensure_future(layer.receive("jobs"))
        await asyncio.sleep(0.1)  # the fetch is running
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        monkeypatch.setattr(Store, "take", take)
        requeued = await layer.requeue_pending()
        await layer.close()
        other = LocalChannelLayer(path=path, prefix=layer.prefix)
        message = await asyncio.wait_for(other.receive("jobs"), 5)
        await other.close()
        return requeued, message

    requeued, message = asyncio.run(scenario())
    assert message == {"type": "job"} and requeued in (0, 1)


def test_a_file_used_by_another_machine_is_refused(path):
    Store(path, "here").db.execute(
        "INSERT INTO processes (id, boot_id, hostname, seen) VALUES ('there', 'another-boot', 'node-2', ?)",
        (time.time(),),
    )
    with pytest.raises(SplitHostsError, match="in use by a process of another machine"):
        Store(path, "mine")


def test_a_file_on_a_network_file_system_is_refused(path, monkeypatch):
    monkeypatch.setattr(local_store, "file_system_of", lambda _: "nfs4")
    with pytest.raises(SplitHostsError, match="network file system"):
        Store(path, "mine")
