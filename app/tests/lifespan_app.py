"""ASGI applications for ``test_interface_server``: one that notes its lifespan events in
the file ``LIFESPAN_TEST_LOG``, one that refuses the lifespan scope as Django's handler does."""

from __future__ import annotations

import asyncio
import os


def note(line: str) -> None:
    with open(os.environ["LIFESPAN_TEST_LOG"], "a") as log:
        log.write(line + "\n")


async def answer(receive, send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def noting(scope, receive, send) -> None:
    if scope["type"] != "lifespan":
        await answer(receive, send)
        return
    while True:
        message = await receive()
        note(message["type"])
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await asyncio.sleep(0.5)  # a clean-up that takes a while
            note("cleaned up")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def refusing(scope, receive, send) -> None:
    if scope["type"] != "http":
        raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
    await answer(receive, send)
