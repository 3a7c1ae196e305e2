"""``daphne channels_kit.relay.asgi:application``: the relay, configured from the environment.

Needs no Django project: the channel layer comes from ``REDIS_URLS`` and friends
(``channels_kit.conf``), the rest from the variables below (``.env.example``). It refuses
to start on Channels' in-memory layer, which no worker shares.
"""

from __future__ import annotations

from channels.layers import InMemoryChannelLayer
from django.core.exceptions import ImproperlyConfigured

from channels_kit.conf import channel_layer_from_env, env_float, env_int, env_str
from channels_kit.layers.base import ChannelLayer
from channels_kit.relay.interface import RelayApplication, RelaySettings
from channels_kit.relay.settings import IDEMPOTENT_METHODS, resend_methods

IN_MEMORY_RELAY = (
    "the channel layer is Channels' in-memory one, which lives inside one process: the relay's "
    "workers would never get what it sends, and every request would hang. Name the layer the "
    "workers use: a Redis server (REDIS_URLS, or a platform's REDIS_URL), or CHANNEL_BACKEND="
    "rabbitmq, postgres or local with its server"
)


def layer_from_env() -> ChannelLayer:
    """The relay's channel layer (``channel_layer_from_env()``); never the in-memory one."""
    layer = channel_layer_from_env()
    if isinstance(layer, InMemoryChannelLayer):
        raise ImproperlyConfigured(IN_MEMORY_RELAY)
    return layer


def settings_from_env() -> RelaySettings:
    """``RelaySettings`` from ``RELAY_*`` variables (the timeout defaults to Daphne's ``--http-timeout``)."""
    wait = env_float("RELAY_NO_WORKER_WAIT_SECONDS", 5.0)
    resend = env_float("RELAY_RESEND_SECONDS", 4.0)
    return RelaySettings(
        timeout=env_float("RELAY_TIMEOUT", env_float("DAPHNE_HTTP_TIMEOUT", 120.0)),
        max_body=env_int("MAX_REQUEST_BYTES", 1024 * 1024),
        health_path=env_str("RELAY_HEALTH_PATH", "/healthz"),
        max_queued_events=env_int("RELAY_MAX_QUEUED_EVENTS", 100),
        group_refresh=env_float("RELAY_GROUP_REFRESH_SECONDS", 60.0),
        no_worker_wait=None if wait < 0 else wait,
        worker_check=env_float("RELAY_WORKER_CHECK_SECONDS", 2.0),
        resend_after=None if resend <= 0 else resend,
        alive_every=env_float("RELAY_ALIVE_SECONDS", 1.0),
        resend_methods=resend_methods(env_str("RELAY_RESEND_METHODS", " ".join(sorted(IDEMPOTENT_METHODS)))),
    )


application = RelayApplication(layer_from_env(), settings_from_env())
