"""The kit's worker server: Channels' ``Worker`` plus a heartbeat for container healthchecks."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from channels.worker import Worker

logger = logging.getLogger("channels_kit.worker")


class HeartbeatWorker(Worker):
    """A ``Worker`` that touches a file while its event loop runs.

    A worker opens no port, so its healthcheck reads the file's age instead: a
    fresh file proves the loop is turning (``python -m channels_kit.probe heartbeat``).
    """

    def __init__(
        self,
        *args,
        heartbeat_path: Path | None = None,
        heartbeat_interval: float = 5.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeat_path = heartbeat_path
        self.heartbeat_interval = heartbeat_interval

    async def handle(self) -> None:
        beat = asyncio.ensure_future(self.heartbeat()) if self.heartbeat_path else None
        logger.info("worker serving channels %s", ", ".join(self.channels))
        try:
            await super().handle()
        finally:
            if beat:
                beat.cancel()

    async def heartbeat(self) -> None:
        """Touch ``heartbeat_path`` every ``heartbeat_interval`` seconds, forever."""
        assert self.heartbeat_path is not None
        self.heartbeat_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self.heartbeat_path.touch()
            await asyncio.sleep(self.heartbeat_interval)
