"""Django app config: makes the kit's management commands and system checks known."""

from django.apps import AppConfig


class ChannelsKitConfig(AppConfig):
    """Registers the kit's ``runworker`` (which overrides Channels' own) and ``channels_status``."""

    name = "channels_kit"
    verbose_name = "Channels deployment kit"

    def ready(self) -> None:
        from channels_kit import checks  # noqa: F401 - registers the system checks
