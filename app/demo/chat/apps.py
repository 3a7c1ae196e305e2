from django.apps import AppConfig
from django.core.management import call_command
from django.db.models.signals import post_migrate


def ensure_demo_user(**kwargs) -> None:
    """After every ``migrate`` (the release step): the demo login from DEMO_USER / DEMO_PASSWORD."""
    call_command("ensure_demo_user", verbosity=kwargs.get("verbosity", 1))


class ChatConfig(AppConfig):
    """The demo chat: rooms over WebSocket, history in the database, background tasks."""

    name = "chat"

    def ready(self) -> None:
        post_migrate.connect(ensure_demo_user, sender=self)
