"""The PostgreSQL layer beyond the conformance suite, on a real PostgreSQL server: NOTIFY wakes
a waiting receiver, lost connections are reopened, processes creating the tables at once,
a receiving process killed, and the layer inspected by ``channels_status``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from urllib.parse import quote

import psycopg
import pytest

from channels_kit.layers.postgres import PostgresChannelLayer
from channels_kit.observe.status import gather_status
from tests.conftest import required_env
from tests.helpers import PRINTING_RECEIVER, BlockedWorker, kill_a_receiver_mid_receive, run


@pytest.fixture
def url() -> str:
    return required_env("TEST_POSTGRES_URL")


def child(code: str, url: str, prefix: str) -> subprocess.Popen:
    """A Python process of its own with a layer on ``url``."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from channels_kit.layers.postgres import PostgresChannelLayer
        layer = PostgresChannelLayer(url=sys.argv[1], prefix=sys.argv[2], capacity=1000)
        """
    ) + textwrap.dedent(code)
    return subprocess.Popen([sys.executable, "-c", script, url, prefix], stdout=subprocess.PIPE, text=True)


def test_a_send_wakes_a_waiting_receiver_by_notify(url, prefix):
    """The receiver polls by itself only every 30 s once its LISTEN is in place: a message
    from another process reaching it within seconds came through NOTIFY."""
    receiver = PostgresChannelLayer(url=url, prefix=prefix, max_poll=30, idle_poll=30)
    sender = PostgresChannelLayer(url=url, prefix=prefix)

    async def scenario():
        for channel in ("jobs", await receiver.new_channel()):
            waiter = asyncio.ensure_future(receiver.receive(channel))
            await asyncio.sleep(1)  # LISTEN in place, the poller in its long wait
            sent = time.monotonic()
            await sender.send(channel, {"type": "job"})
            assert await asyncio.wait_for(waiter, 10) == {"type": "job"}
            assert time.monotonic() - sent < 5
        await receiver.close()
        await sender.close()

    run(scenario())


def backends(url: str, application_name: str) -> int:
    """Terminate every server process of ``application_name`` (a network cut, as the client sees it)."""
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return len(rows)


def test_lost_connections_are_reopened_and_a_waiting_receive_goes_on(url, prefix):
    name = f"kit-test-{prefix}"
    layer = PostgresChannelLayer(url=url, prefix=prefix, application_name=name)
    sender = PostgresChannelLayer(url=url, prefix=prefix)

    async def scenario():
        await layer.send("warm", {"type": "x"})  # the store's connection is open
        assert await layer.receive("warm") == {"type": "x"}  # and the listener's
        waiter = asyncio.ensure_future(layer.receive("jobs"))
        await asyncio.sleep(0.5)
        cut = backends(url, name)
        await asyncio.sleep(1.5)  # the poller meets the dead connection, the listener reconnects
        await sender.send("jobs", {"type": "job", "n": 1})
        first = await asyncio.wait_for(waiter, 15)
        await layer.send("jobs", {"type": "job", "n": 2})  # its own sends work again too
        second = await asyncio.wait_for(layer.receive("jobs"), 10)
        await layer.close()
        await sender.close()
        return cut, first, second

    cut, first, second = run(scenario())
    assert cut == 2, "the store's and the listener's connections"
    assert (first["n"], second["n"]) == (1, 2)


def test_processes_creating_the_tables_at_once_all_start(url, prefix):
    """Six processes open a fresh schema together: one creates the tables, none fails."""
    schema = f"kit_{prefix}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    fresh = url + ("&" if "?" in url else "?") + "options=" + quote(f"-c search_path={schema}")
    try:
        processes = [
            child(
                """
                async def main():
                    await layer.send("jobs", {"type": "job"})
                    print((await layer.receive("jobs"))["type"], flush=True)
                asyncio.run(main())
                """,
                fresh,
                f"{prefix}-{n}",
            )
            for n in range(6)
        ]
        outputs = [process.communicate(timeout=60)[0] for process in processes]
        assert [process.returncode for process in processes] == [0] * 6
        assert outputs == ["job\n"] * 6
    finally:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_process_killed_mid_receive_loses_at_most_what_it_had_taken(url, prefix):
    receiver = child(PRINTING_RECEIVER, url, prefix)
    kill_a_receiver_mid_receive(receiver, PostgresChannelLayer(url=url, prefix=prefix, capacity=1000))


def test_status_sees_queues_and_a_running_worker(url, prefix):
    async def scenario():
        layer = PostgresChannelLayer(url=url, prefix=prefix)
        async with BlockedWorker(layer, jobs=3) as blocked:
            busy = await blocked.busy_status()
            await blocked.release()
        after = await gather_status(layer)
        await layer.close()
        return busy, after

    busy, after = run(scenario())
    [state] = busy.workers
    assert state.channels == ("jobs",) and state.busy == 1
    assert busy.total("jobs").depth >= 1  # the jobs not yet taken
    assert after.workers == []
