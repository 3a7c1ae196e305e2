"""Consumers in relay mode: one instance per event, the consumer's state travelling with it.

A worker runs each relayed WebSocket event through the project's own application
(middleware, URL routing, the consumer class), on a fresh consumer instance whose
attributes are restored from the state the interface server keeps for the socket.
After the handler the attributes go back to the interface in ``relay.done``. So no
worker holds anything a socket needs: the next event may run on any worker, and
workers can restart at any time.

To make an unchanged Channels consumer work that way, ``install_consumer_hook()``
wraps ``AsyncConsumer.__call__`` (every consumer's entry point): inside a relayed
event it

- names the consumer after the socket's relay channel (``self.channel_name``), so
  groups and direct sends reach the interface server holding the socket;
- gives it a channel layer whose ``group_add``/``group_discard`` of relay channels
  become ``relay.group.add``/``relay.group.discard`` messages to that interface
  (``channels_kit.relay.groups`` keeps the memberships);
- restores the saved attributes, dispatches the one event, and saves them again.

Outside a relayed event (background channels, direct mode) consumers run as usual.

What survives between events: instance attributes msgpack can carry (str, int, float,
bool, None, bytes, lists, dicts). Others (a model instance, a task, a socket) are left
out with a warning; read such things again from ``self.scope`` (``user``, ``session``:
the middleware sets them up again for every event) or from the database.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass
from typing import Any

import msgpack
from asgiref.sync import async_to_sync
from channels import DEFAULT_CHANNEL_LAYER
from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer

from channels_kit.layers.base import ChannelLayer
from channels_kit.relay.protocol import GROUP_ADD, GROUP_DISCARD, is_relay_channel

logger = logging.getLogger(__name__)

# Set by the consumer machinery on every instance; never part of the saved state.
FRAMEWORK_ATTRIBUTES = frozenset({"scope", "channel_layer", "channel_name", "channel_receive", "base_send"})
# A larger state is refused (the socket is closed with 4500): it travels with every event.
MAX_STATE_BYTES = 64 * 1024


@dataclass
class RelayEvent:
    """One relayed WebSocket event being handled on this worker."""

    connection: str  # the socket's relay channel
    state: dict[str, Any]
    layer: ChannelLayer | None = None  # the worker's layer: the one the socket's channel lives on
    disconnecting: bool = False  # the socket is gone: replies and group changes are moot
    new_state: dict[str, Any] | None = None
    id: str | None = None  # the same for every attempt of this event (protocol.event_id)
    attempt: int = 1  # > 1: sent again, its first worker presumed dead (it may have run part)


current_event: contextvars.ContextVar[RelayEvent | None] = contextvars.ContextVar(
    "channels_kit_relay_event", default=None
)


def current_event_id() -> str | None:
    """The id of the relayed WebSocket event being handled (None outside relay mode).

    An event whose worker died is sent again with the same id, and may have run in part
    the first time: a handler whose effect must happen once (a message stored, a payment)
    keys it by this id.
    """
    event = current_event.get()
    return event.id if event is not None else None


class RelayConsumerLayer:
    """The channel layer as a consumer sees it during a relayed event.

    Group changes of relay channels go to the interface server holding the socket;
    everything else is the real layer's.
    """

    def __init__(self, layer: ChannelLayer, event: RelayEvent) -> None:
        self._layer = layer
        self._event = event

    def __getattr__(self, name: str) -> Any:
        return getattr(self._layer, name)

    async def group_add(self, group: str, channel: str) -> None:
        if not await self._group_change(GROUP_ADD, group, channel):
            await self._layer.group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        if not await self._group_change(GROUP_DISCARD, group, channel):
            await self._layer.group_discard(group, channel)

    async def _group_change(self, kind: str, group: str, channel: str) -> bool:
        """True when ``channel`` is a relay channel, whose interface now has the change."""
        if not is_relay_channel(channel):
            return False
        self._layer.require_valid_group_name(group)
        if self._event.disconnecting and channel == self._event.connection:
            return True  # the interface forgot the closed socket's groups already
        await self._layer.send(channel, {"type": kind, "group": group})
        return True


_warned: set[tuple[type, str]] = set()


def snapshot(consumer: Any, initial: dict[str, Any]) -> dict[str, Any]:
    """The consumer's instance attributes that can travel (``initial``: as ``__init__`` left them)."""
    state: dict[str, Any] = {}
    size = 0
    for name, value in vars(consumer).items():
        if name in FRAMEWORK_ATTRIBUTES:
            continue
        try:
            size += len(msgpack.packb(value))
        except (TypeError, ValueError, OverflowError):
            key = (type(consumer), name)
            if initial.get(name) is not value and key not in _warned:
                _warned.add(key)
                logger.warning(
                    "%s.%s (%s) cannot travel with the socket's events and is left out; "
                    "keep plain data on consumers in relay mode",
                    type(consumer).__qualname__,
                    name,
                    type(value).__name__,
                )
            continue
        state[name] = value
    if size > MAX_STATE_BYTES:
        raise ValueError(
            f"the state of {type(consumer).__qualname__} is {size} bytes, more than {MAX_STATE_BYTES}: "
            "keep large data out of consumer attributes in relay mode"
        )
    return state


async def _never() -> dict:
    raise RuntimeError("a consumer in relay mode gets its layer messages as events, not by receiving")


_original_call = AsyncConsumer.__call__


async def _relay_call(self: AsyncConsumer, scope: dict, receive: Any, send: Any) -> None:
    event = current_event.get()
    if event is None:
        return await _original_call(self, scope, receive, send)
    initial = dict(vars(self))
    self.scope = scope
    if event.layer is not None and self.channel_layer_alias == DEFAULT_CHANNEL_LAYER:
        layer = event.layer
    else:
        layer = get_channel_layer(self.channel_layer_alias)
    self.channel_layer = RelayConsumerLayer(layer, event) if layer is not None else None
    self.channel_name = event.connection
    self.channel_receive = _never
    self.base_send = async_to_sync(send) if self._sync else send
    vars(self).update(event.state)
    try:
        await self.dispatch(await receive())
    except StopConsumer:
        pass  # the consumer is done with the socket (its disconnect, say)
    finally:
        event.new_state = snapshot(self, initial)
    return None


def install_consumer_hook() -> None:
    """Make every Channels consumer relay-aware (idempotent; no effect outside relayed events)."""
    AsyncConsumer.__call__ = _relay_call
