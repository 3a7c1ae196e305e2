"""The test project's application: two routed channels behind a middleware, which
``runworker`` has to look through to find them, and a plain HTTP application for
relay mode (``runworker --relay``)."""

import asyncio

from channels.middleware import BaseMiddleware
from channels.routing import ChannelNameRouter, ProtocolTypeRouter

from tests.workerproject.consumers import JobConsumer


async def http_application(scope, receive, send):
    """200 with the path; ``?sleep=N`` first waits N seconds."""
    await receive()
    query = scope["query_string"].decode()
    if query.startswith("sleep="):
        await asyncio.sleep(float(query.removeprefix("sleep=")))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"worker project: {scope['path']}".encode()})


application = ProtocolTypeRouter(
    {
        "http": http_application,
        "channel": BaseMiddleware(
            ChannelNameRouter({"jobs": JobConsumer.as_asgi(), "jobs.slow": JobConsumer.as_asgi()})
        ),
    }
)
