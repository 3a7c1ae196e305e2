"""Django app config, so that the kit's management commands are found."""

from django.apps import AppConfig


class ChannelsKitConfig(AppConfig):
    """Registers the kit's ``runworker`` (which overrides Channels' own)."""

    name = "channels_kit"
    verbose_name = "Channels deployment kit"
