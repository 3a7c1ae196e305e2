"""The test project's application: two routed channels behind a middleware, which
``runworker`` has to look through to find them."""

from channels.middleware import BaseMiddleware
from channels.routing import ChannelNameRouter, ProtocolTypeRouter

from tests.workerproject.consumers import JobConsumer

application = ProtocolTypeRouter(
    {
        "channel": BaseMiddleware(
            ChannelNameRouter({"jobs": JobConsumer.as_asgi(), "jobs.slow": JobConsumer.as_asgi()})
        ),
    }
)
