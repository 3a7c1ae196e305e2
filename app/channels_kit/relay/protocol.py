"""The relay protocol: channel names, message types and the ASGI scope on the wire.

Interface servers and workers agree on nothing else; ``docs/relay-protocol.md``
describes it for anyone writing another interface server.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

# The ASGI callables a connection is served through.
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

# --- work channels: interface -> workers (general channels, any worker may take a message)
HTTP_REQUEST = "http.request"
WEBSOCKET_CONNECT = "websocket.connect"
WEBSOCKET_RECEIVE = "websocket.receive"
WEBSOCKET_DISCONNECT = "websocket.disconnect"
# Layer messages of other types that reached a connection (a group message of type
# "chat.message", say): a worker runs the consumer's handler for them.
WEBSOCKET_EVENT = "websocket.event"

HTTP_CHANNELS = (HTTP_REQUEST,)
WEBSOCKET_CHANNELS = (WEBSOCKET_CONNECT, WEBSOCKET_RECEIVE, WEBSOCKET_DISCONNECT, WEBSOCKET_EVENT)
WORK_CHANNELS = HTTP_CHANNELS + WEBSOCKET_CHANNELS

# --- worker -> interface, on the connection's reply channel (besides the ASGI messages
# http.response.start/body and websocket.accept/send/close, passed on as they are)
DONE = "relay.done"  # a WebSocket event is handled: {"seq", "state"?, "error"}
GROUP_ADD = "relay.group.add"  # {"group"}: put this connection in a group
GROUP_DISCARD = "relay.group.discard"  # {"group"}
HTTP_TAKEN = (
    "relay.http.taken"  # {"channel", "worker"}: a worker runs the request; tell it there of a disconnect
)
# A worker still runs this request or event ({"seq"?, "worker"}): sent every "alive_every"
# seconds of the envelope, from half that after it took the message until it answers.
ALIVE = "relay.alive"

# --- interface -> worker, on the channel named in HTTP_TAKEN
HTTP_DISCONNECT = "relay.http.disconnect"

# Every channel an interface server reads starts with this; the part up to "!" names the
# interface process, so Redis layers keep all of them on one shard and one reader.
RELAY_CHANNEL_PREFIX = "relay"
CONNECTION_INFIX = "c."
GROUP_INFIX = "g."

# ASGI scope keys that travel (everything else a server adds stays behind).
SCOPE_KEYS = (
    "type",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "query_string",
    "root_path",
    "headers",
    "client",
    "server",
    "subprotocols",
    "relay",
)


def is_relay_channel(name: str) -> bool:
    """Whether ``name`` is a channel an interface server reads (a connection or a group member)."""
    return name.startswith(RELAY_CHANNEL_PREFIX + ".") and "!" in name


def process_prefix(channel: str) -> str:
    """The process-specific part of a ``!`` channel name, ``!`` included."""
    return channel[: channel.index("!") + 1]


def group_member_channel(prefix: str, group: str) -> str:
    """The channel through which the interface ``prefix`` is a member of ``group``.

    Hashed, so that any valid group name (up to 100 characters) gives a valid channel name.
    """
    digest = hashlib.blake2b(group.encode("utf8"), digest_size=8).hexdigest()
    return f"{prefix}{GROUP_INFIX}{digest}"


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively: what msgpack would make of them anyway."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def scope_to_wire(scope: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The serializable part of an ASGI ``http``/``websocket`` scope, plus ``extra`` keys."""
    wire = {key: _plain(scope[key]) for key in SCOPE_KEYS if key in scope and scope[key] is not None}
    if extra:
        wire.update(_plain(dict(extra)))
    return wire


class ScopeError(ValueError):
    """A scope on the wire that no interface server would send (a forged layer message?)."""


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _data(value: Any) -> bool:
    return isinstance(value, (bytes, str))


def _address(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[0], str)
        and (value[1] is None or (isinstance(value[1], int) and not isinstance(value[1], bool)))
    )


def _headers(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(part, bytes) for part in pair)
        for pair in value
    )


def _relay(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and _text(v) for k, v in value.items())


# What each scope key may hold on the wire; a worker drops any other key.
SCOPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "type": lambda v: v in ("http", "websocket"),
    "asgi": lambda v: isinstance(v, Mapping) and all(isinstance(k, str) and _text(x) for k, x in v.items()),
    "http_version": _text,
    "method": _text,
    "scheme": _text,
    "path": _text,
    "raw_path": _data,
    "query_string": _data,
    "root_path": _text,
    "headers": _headers,
    "client": _address,
    "server": _address,
    "subprotocols": lambda v: isinstance(v, (list, tuple)) and all(_text(item) for item in v),
    "relay": _relay,
}
assert tuple(SCOPE_CHECKS) == SCOPE_KEYS


def scope_from_wire(wire: Mapping[str, Any]) -> dict[str, Any]:
    """An ASGI scope rebuilt from ``scope_to_wire``: headers as byte pairs, addresses as tuples.

    Only ``SCOPE_KEYS`` are kept, so that a message forged on the layer cannot hand the
    application a ``user`` or a ``session``; a kept key of the wrong type (headers that are
    not byte pairs, say) raises ``ScopeError``, and so does a scope without ``type``.
    """
    if not isinstance(wire, Mapping):
        raise ScopeError(f"the scope must be a mapping, not {type(wire).__name__}")
    dropped = sorted(str(key) for key in wire if key not in SCOPE_CHECKS)
    if dropped:
        logger.warning("dropped scope keys no interface server sends: %s", ", ".join(dropped))
    scope: dict[str, Any] = {}
    for key, check in SCOPE_CHECKS.items():
        if key not in wire:
            continue
        if not check(wire[key]):
            raise ScopeError(f"scope key {key!r} holds {type(wire[key]).__name__} {wire[key]!r:.80}")
        scope[key] = wire[key]
    if "type" not in scope:
        raise ScopeError("the scope has no type")
    scope["headers"] = [(bytes(name), bytes(value)) for name, value in scope.get("headers", [])]
    for key in ("client", "server"):
        if key in scope:
            scope[key] = tuple(scope[key])
    for key in ("raw_path", "query_string"):
        if isinstance(scope.get(key), str):
            scope[key] = scope[key].encode("latin-1")
    if "subprotocols" in scope:
        scope["subprotocols"] = list(scope["subprotocols"])
    if "asgi" in scope:
        scope["asgi"] = dict(scope["asgi"])
    if "relay" in scope:
        scope["relay"] = dict(scope["relay"])
    scope.setdefault("asgi", {"version": "3.0"})
    return scope


def work_message(
    *,
    reply: str,
    scope: Mapping[str, Any],
    event: Mapping[str, Any],
    timeout: float,
    now: float | None = None,
    **relay: Any,
) -> dict[str, Any]:
    """A message for a work channel: the ASGI ``event`` for the application, and the relay
    envelope (reply channel, scope, deadline and, for WebSockets, ``seq`` and ``state``).
    ``now``: the time the deadline counts from, by the layer's clock (``clock.LayerClock``)."""
    start = now if now is not None else time.time()
    envelope = {"reply": reply, "scope": scope, "deadline": start + timeout, **relay}
    return {"type": "relay.work", "relay": envelope, "event": dict(event)}


# A reply may carry the replies sent right after it, in order, in this key (the worker
# batches what a handler sends within a couple of milliseconds).
BATCH_KEY = "relay_then"


def unbatch(message: dict) -> list[dict]:
    """A layer message of replies as the replies it carries, in order."""
    rest = message.pop(BATCH_KEY, None)
    return [message, *rest] if rest else [message]


def alive_every(relay: Mapping[str, Any]) -> float | None:
    """The envelope's ``alive_every``: seconds between a worker's beats, when it is a number
    above 0; else None, no beats (a zero or negative one, from a misconfigured or foreign
    interface, would make the worker beat without pause)."""
    every = relay.get("alive_every")
    if isinstance(every, int | float) and not isinstance(every, bool) and math.isfinite(every) and every > 0:
        return float(every)
    return None


def stale(message: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether a worker took this work message after its ``start_by``: the interface has
    presumed it lost by then (its worker died?) and sent it again, so it must not run."""
    start_by = message.get("relay", {}).get("start_by")
    return start_by is not None and (now if now is not None else time.time()) > float(start_by)


def event_id(envelope: Mapping[str, Any]) -> str | None:
    """``<socket channel>#<seq>``: the same for every attempt of one WebSocket event."""
    seq = envelope.get("seq")
    return None if seq is None else f"{envelope['reply']}#{seq}"


def request_id(scope: Mapping[str, Any]) -> str | None:
    """The id of a relayed request (``request.scope`` in a Django view), the same for every
    attempt: a view whose effect must happen once, with its method in
    ``RELAY_RESEND_METHODS``, keys it by this. None outside relay mode."""
    relay = scope.get("relay")
    channel = relay.get("channel") if isinstance(relay, Mapping) else None
    return channel if isinstance(channel, str) else None


def expired(message: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether the interface has given up on this work message (its deadline passed)."""
    deadline = message.get("relay", {}).get("deadline")
    return deadline is not None and (now if now is not None else time.time()) > float(deadline)
