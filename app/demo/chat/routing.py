"""Routes of the chat's ASGI protocols."""

from channels.auth import AuthMiddlewareStack
from django.urls import re_path

from chat.consumers import ChatConsumer, EchoConsumer, ShootoutConsumer, TaskConsumer
from chat.models import ROOM_PATTERN, Task

websocket_urlpatterns = [
    # The chat greets the session's user: sessions and auth for it alone. In relay mode
    # that middleware runs for every event (a worker builds each consumer afresh).
    re_path(rf"^ws/chat/(?P<room>{ROOM_PATTERN})/$", AuthMiddlewareStack(ChatConsumer.as_asgi())),
    # The echo needs nobody's identity (it is the WebSocket benchmark's endpoint).
    re_path(r"^ws/echo/$", EchoConsumer.as_asgi()),
    # The websocket-shootout protocol (echo, broadcast): the broadcast benchmark's endpoint.
    re_path(r"^ws/shootout/$", ShootoutConsumer.as_asgi()),
]

# Every task channel runs the same consumer; which workers serve which channel is
# deployment's choice (runworker --only-channels / --exclude-channels).
channel_routes = {channel: TaskConsumer.as_asgi() for channel in Task.Channel.values}
