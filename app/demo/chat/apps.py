from django.apps import AppConfig


class ChatConfig(AppConfig):
    """The demo chat: rooms over WebSocket, history in the database, background tasks."""

    name = "chat"
