"""The kit's worker serves channel messages and keeps its heartbeat file fresh."""

import asyncio

from channels.consumer import AsyncConsumer
from channels.layers import InMemoryChannelLayer

from channels_kit.worker import HeartbeatWorker


def test_worker_serves_and_beats(tmp_path):
    seen: list[dict] = []

    class Recorder(AsyncConsumer):
        async def job_run(self, message):
            seen.append(message)

    layer = InMemoryChannelLayer()
    beat = tmp_path / "beat"
    worker = HeartbeatWorker(
        application=Recorder.as_asgi(),
        channels=["jobs"],
        channel_layer=layer,
        heartbeat_path=beat,
        heartbeat_interval=0.05,
    )

    async def scenario():
        server = asyncio.ensure_future(worker.arun())
        await layer.send("jobs", {"type": "job.run", "n": 1})
        await layer.send("jobs", {"type": "job.run", "n": 2})
        for _ in range(100):
            if len(seen) == 2 and beat.exists():
                break
            await asyncio.sleep(0.05)
        server.cancel()

    asyncio.run(scenario())
    assert [m["n"] for m in seen] == [1, 2]
    assert beat.exists()
