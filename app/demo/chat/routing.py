"""Routes of the chat's ASGI protocols."""

from django.urls import re_path

from chat.consumers import ChatConsumer, TaskConsumer
from chat.models import ROOM_PATTERN, Task

websocket_urlpatterns = [
    re_path(rf"^ws/chat/(?P<room>{ROOM_PATTERN})/$", ChatConsumer.as_asgi()),
]

# Every task channel runs the same consumer; which workers serve which channel is
# deployment's choice (runworker --only-channels / --exclude-channels).
channel_routes = {channel: TaskConsumer.as_asgi() for channel in Task.Channel.values}
