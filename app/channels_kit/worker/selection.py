"""Which channels a worker serves: routed channel names, filtered by globs.

Workers are split into tiers by channel (``runworker --only-channels=http.*``,
``--exclude-channels=thumbnail``). Candidates are the names given on the command
line plus every name the project's ASGI application routes for the ``channel``
protocol; ``only`` and ``exclude`` globs (``fnmatch``) then narrow that set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

# Attributes through which ASGI middleware usually reaches the application it wraps
# (channels' BaseMiddleware: ``inner``; Starlette-style and others: ``app``).
WRAPPED_ATTRIBUTES = ("inner", "app", "application")
# Deep enough for any real middleware stack; stops a wrapper that wraps itself.
MAX_UNWRAP_DEPTH = 20


class NoChannelsError(ValueError):
    """The filters left no channel to serve."""


def _router_mapping(app: Any) -> Mapping[str, Any] | None:
    """The ``application_mapping`` of the router inside ``app``, unwrapping middleware."""
    seen: set[int] = set()
    for _ in range(MAX_UNWRAP_DEPTH):
        if app is None or id(app) in seen:
            return None
        seen.add(id(app))
        mapping = getattr(app, "application_mapping", None)
        if isinstance(mapping, Mapping):
            return mapping
        app = next((getattr(app, name) for name in WRAPPED_ATTRIBUTES if getattr(app, name, None)), None)
    return None


def routed_channels(application: Any) -> list[str]:
    """Channel names routed by ``application``'s ``"channel"`` protocol (ProtocolTypeRouter ->
    ChannelNameRouter), in routing order; empty when it routes none or cannot be read."""
    protocols = _router_mapping(application)
    if protocols is None or "channel" not in protocols:
        return []
    channels = _router_mapping(protocols["channel"])
    if channels is None:
        return []
    return [name for name in channels if isinstance(name, str)]


def routed_protocols(application: Any) -> set[str]:
    """The protocols ``application`` routes (``ProtocolTypeRouter`` keys); a bare application
    (Django's ``ASGIHandler``, say) counts as HTTP only."""
    protocols = _router_mapping(application)
    if protocols is None:
        return {"http"}
    return {name for name in protocols if isinstance(name, str)}


def _matches_any(name: str, globs: Iterable[str]) -> bool:
    return any(fnmatchcase(name, glob) for glob in globs)


def select_channels(
    candidates: Iterable[str], only: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[str]:
    """``candidates`` (duplicates dropped, order kept) that match any ``only`` glob (when
    there are some) and no ``exclude`` glob. Raises ``NoChannelsError`` when none is left."""
    unique = list(dict.fromkeys(candidates))
    selected = [
        name for name in unique if (not only or _matches_any(name, only)) and not _matches_any(name, exclude)
    ]
    if not selected:
        raise NoChannelsError(
            f"no channel left to serve: candidates {unique or '(none)'}, "
            f"--only-channels {list(only) or '(any)'}, --exclude-channels {list(exclude) or '(none)'}"
        )
    return selected
