"""One relayed HTTP request on a worker: the request in, the project's response back.

``RelayHandler`` (``channels_kit.relay.handler``) makes an ``HttpExchange`` for each
``http.request`` work message. The exchange is the application's ``receive`` and
``send``; what those share (the response's status, whether it finished, the client's
disconnect) are its attributes. It needs of the worker only the application, the layer
and the worker's identity.

Until the response starts, the exchange tells the interface where to report the client's
disconnect (``relay.http.taken``, for long-polls) and, when asked, that it still runs
(``relay.alive``). A worker that stops mid-request answers 503 rather than leave the
client waiting for the relay's timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from channels_kit.layers.base import ChannelLayer
from channels_kit.observe.consumer_errors import errors_logger
from channels_kit.relay.outbox import LAST_WORDS_SECONDS, ReplyOutbox, send_beats
from channels_kit.relay.protocol import HTTP_DISCONNECT, HTTP_TAKEN, alive_every, scope_from_wire

# The worker's half of relay mode logs under one name, as it did before it was split up.
logger = logging.getLogger("channels_kit.relay.handler")

# A request still unanswered after this long tells the interface where to report a
# disconnect (long-poll); quicker ones never need to. (Interfaces that ask for beats,
# ``alive_every`` in the envelope, get it after half a beat instead.)
TAKEN_NOTICE_SECONDS = 1.0


class HttpExchange:
    """One ``http.request`` work message run through ``application``."""

    def __init__(
        self,
        application: Any,
        layer: ChannelLayer,
        identity: str,
        message: dict,
        taken_notice: float = TAKEN_NOTICE_SECONDS,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.application = application
        self.layer = layer
        self.identity = identity
        self.taken_notice = taken_notice
        self.now = now  # the clock the envelope's deadline is in (the layer's)
        self.relay = message["relay"]
        self.reply: str = self.relay["reply"]
        self.scope = scope_from_wire(self.relay["scope"])
        self.request: dict = message["event"]
        self.what = f"{self.scope.get('method')} {self.scope.get('path')}"
        self.outbox = ReplyOutbox(layer, self.reply)
        self.disconnected = asyncio.Event()  # the interface said the client left
        self.body_given = False
        self.status: int | None = None  # of the response, once it started
        self.finished = False  # the response's last body was sent
        self._notices: list[asyncio.Task] = []

    async def run(self) -> bool:
        """Run the request; True when the application answered below 500."""
        every = alive_every(self.relay)
        first_notice = every / 2 if every else self.taken_notice
        if every and "start_by" not in self.relay:
            # A request the interface never sends again (a POST): say it is taken at once, so
            # that a worker killed before its first beat is noticed (502), not waited for.
            first_notice = 0.0
        notice_timer = asyncio.get_running_loop().call_later(first_notice, self._notice_due, every)
        app = asyncio.ensure_future(self.application(self.scope, self.receive, self.send))
        try:
            # No response start before the deadline: the interface has answered 503 already.
            await asyncio.wait({app}, timeout=max(0.0, self.relay["deadline"] - self.now()))
            if not app.done() and self.status is None:
                logger.warning("%s: no response within the relay timeout; cancelled", self.what)
                app.cancel()
            await asyncio.wait({app})
        except asyncio.CancelledError:
            # This worker is stopping and gave up on the request: say so now rather than
            # leave the client waiting for the relay's timeout.
            app.cancel()
            await asyncio.wait({asyncio.ensure_future(self._last_words())}, timeout=LAST_WORDS_SECONDS)
            raise
        finally:
            notice_timer.cancel()
            for task in self._notices:
                task.cancel()
        return await self._outcome(app)

    # --- the application's receive and send ------------------------------------------

    async def receive(self) -> dict:
        if not self.body_given:
            self.body_given = True
            return self.request
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, event: dict) -> None:
        if event["type"] == "http.response.start":
            self.status = int(event["status"])
            event = {"type": event["type"], "status": self.status, "headers": list(event.get("headers", []))}
        elif event["type"] == "http.response.body":
            self.finished = not event.get("more_body", False)
            event = {"type": event["type"], "body": event.get("body", b""), "more_body": not self.finished}
        else:
            return  # extensions (trailers, pathsend) do not travel
        await self.outbox.send(event)
        if self.finished:
            await self.outbox.flush()  # the response is complete: nothing more to wait for

    async def answer(self, code: int, text: str) -> None:
        """A whole plain-text response of the worker's own (500, 503)."""
        await self.send(
            {"type": "http.response.start", "status": code, "headers": [(b"content-type", b"text/plain")]}
        )
        await self.send({"type": "http.response.body", "body": text.encode()})

    # --- the interface's side ---------------------------------------------------------

    def _notice_due(self, every: float | None) -> None:
        if self.status is None:  # still no response: the interface may need our channel
            self._notices.append(asyncio.ensure_future(self._taken_notice()))
            if every:
                beats = send_beats(
                    self.layer, self.identity, self.reply, {}, every, every, lambda: self.status is None
                )
                self._notices.append(asyncio.ensure_future(beats))

    async def _taken_notice(self) -> None:
        """A request without a response after ``taken_notice`` seconds: give the interface a
        channel for the client's disconnect (long-polls), and listen on it."""
        channel = await self.layer.new_channel()
        await self.layer.send(self.reply, {"type": HTTP_TAKEN, "channel": channel, "worker": self.identity})
        while (await self.layer.receive(channel)).get("type") != HTTP_DISCONNECT:
            pass
        self.disconnected.set()

    def _last_words(self) -> Coroutine[Any, Any, None]:
        """What a stopping worker still sends, chosen now: a 503, the end of a response
        under way (short, rather than hang), or what is held."""
        if self.status is None:
            return self.answer(503, "the worker stopped\n")
        if not self.finished:
            return self.send({"type": "http.response.body", "body": b"", "more_body": False})
        return self.outbox.flush()

    async def _outcome(self, app: asyncio.Future) -> bool:
        """After the application returned: a 500 of the worker's own when it raised or sent
        nothing, the end of a response it left open."""
        if app.cancelled():
            return False
        error = app.exception()
        if error is not None:
            errors_logger.error("%s raised", self.what, exc_info=error)
            if self.status is None:
                await self.answer(500, "internal server error\n")
            return False
        if self.status is None:
            errors_logger.error("%s: the application sent no response", self.what)
            await self.answer(500, "the application sent no response\n")
            return False
        if not self.finished:
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        return self.status < 500
