"""Routes of the chat's ASGI protocols."""

from django.urls import re_path

from chat.consumers import TASK_CHANNEL, ChatConsumer, TaskConsumer
from chat.models import ROOM_PATTERN

websocket_urlpatterns = [
    re_path(rf"^ws/chat/(?P<room>{ROOM_PATTERN})/$", ChatConsumer.as_asgi()),
]

channel_routes = {
    TASK_CHANNEL: TaskConsumer.as_asgi(),
}
