"""ASGI entry point: HTTP through Django, WebSockets to the chat, background channels to workers."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatdemo.settings")
# Set up Django before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from chat.routing import channel_routes, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Origin checked against ALLOWED_HOSTS: other sites' pages cannot open sockets here.
        "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
        "channel": ChannelNameRouter(channel_routes),
    }
)
