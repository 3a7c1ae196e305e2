"""ASGI lifespan events for a server that sends none (Daphne).

One lifespan instance of the application runs beside the connections: ``startup()``
when the server starts, ``shutdown()`` when it stops, after its connections are gone.
The relay uses them to finish what its closed sockets left queued and to leave its
groups; an application that takes no lifespan events (Django's handler, Channels'
``ProtocolTypeRouter``: they raise on the scope) is left alone, as the ASGI
specification asks of servers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)


class Lifespan:
    """The lifespan instance of ``application``; each step waits at most ``timeout`` seconds."""

    def __init__(self, application: Any, timeout: float) -> None:
        self.application = application
        self.timeout = timeout
        self.supported = False
        self._events: asyncio.Queue[dict] = asyncio.Queue()
        self._replies: asyncio.Queue[dict] = asyncio.Queue()
        self._instance: asyncio.Future | None = None

    async def startup(self) -> bool:
        """Start the instance and send ``lifespan.startup``; False when the application
        said ``lifespan.startup.failed`` (the server should not serve)."""
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self._instance = asyncio.ensure_future(self.application(scope, self._events.get, self._replies.put))
        self._events.put_nowait({"type": "lifespan.startup"})
        reply = await self._reply("startup")
        if reply is None:
            return True
        if reply["type"] == "lifespan.startup.failed":
            logger.error("the application failed to start: %s", reply.get("message", "(no message)"))
            return False
        self.supported = reply["type"] == "lifespan.startup.complete"
        return True

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` (when the application took the startup) and wait for it."""
        if self._instance is None:
            return
        try:
            if self.supported and not self._instance.done():
                self._events.put_nowait({"type": "lifespan.shutdown"})
                reply = await self._reply("shutdown")
                if reply is not None and reply["type"] == "lifespan.shutdown.failed":
                    logger.error(
                        "the application's shutdown failed: %s", reply.get("message", "(no message)")
                    )
        finally:
            if not self._instance.done():
                self._instance.cancel()
                await asyncio.gather(self._instance, return_exceptions=True)

    async def _reply(self, step: str) -> dict | None:
        """The application's answer to ``step``; None when it raised, returned or took too long."""
        assert self._instance is not None
        answer = asyncio.ensure_future(self._replies.get())
        await asyncio.wait(
            {answer, self._instance}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if answer.done():
            return answer.result()
        answer.cancel()
        if not self._instance.done():
            logger.warning("the application did not answer lifespan.%s within %g s", step, self.timeout)
        elif not self._instance.cancelled() and self._instance.exception() is not None:
            # What Django's handler and Channels' router do with a scope they do not serve.
            logger.info("the application takes no lifespan events (%s)", self._instance.exception())
        return None
