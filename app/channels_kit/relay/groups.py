"""Group membership on an interface server: one layer membership per group, not per socket.

A consumer's ``group_add(group, <its connection>)`` reaches the interface holding the
socket as a ``relay.group.add`` message. The interface keeps the socket in a local set
and, while that set is not empty, is a member of the group itself, through one channel
of its own (``relay.<process>!g.<hash>``). A ``group_send`` then costs the layer one
message per interface server holding members, whatever the number of sockets, and each
interface hands it to its local members.

Correctness as sockets come and go:

- The local set changes at once; the layer membership follows in a serial task per group,
  so a join and a leave can never reach Redis out of order. ``add()`` returns only once
  the interface is a member, so a socket is in the group before any later message on its
  connection (its ``websocket.accept``, for instance) is processed.
- A closed socket leaves every local set at once; nothing waits for a worker to run the
  consumer's ``disconnect``.
- Every ``refresh_interval`` the interface renews its memberships, which keeps them
  younger than the layer's ``group_expiry`` and restores them after a Redis restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol

from channels_kit.layers.base import ChannelLayer
from channels_kit.relay.protocol import group_member_channel

logger = logging.getLogger(__name__)

# Pause before a failed membership change is tried again.
RETRY_SECONDS = 1.0


class GroupMember(Protocol):
    """What the registry needs of a local socket."""

    groups: set[str]

    async def deliver_group_message(self, message: dict) -> None: ...


class GroupRegistry:
    """The groups of one interface process and their local members."""

    def __init__(self, layer: ChannelLayer, prefix: str, refresh_interval: float = 60.0) -> None:
        self.layer = layer
        self.prefix = prefix
        self.refresh_interval = refresh_interval
        self.members: dict[str, set[GroupMember]] = {}
        # Groups the layer currently lists this interface in.
        self.joined: set[str] = set()
        self._syncing: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._listeners: dict[str, asyncio.Task[None]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self.group_messages = 0

    def channel_for(self, group: str) -> str:
        """This interface's member channel for ``group``."""
        return group_member_channel(self.prefix, group)

    # --- membership -----------------------------------------------------------------

    async def add(self, group: str, member: GroupMember) -> None:
        """Put ``member`` in ``group``; returns once this interface is a member of the group."""
        self.members.setdefault(group, set()).add(member)
        member.groups.add(group)
        await self._changed(group)

    async def discard(self, group: str, member: GroupMember) -> None:
        """Take ``member`` out of ``group`` (no error when it was not in it)."""
        local = self.members.get(group)
        if local is not None:
            local.discard(member)
        member.groups.discard(group)
        await self._changed(group)

    def forget(self, member: GroupMember) -> None:
        """Take a closed socket out of all its groups at once; the layer follows in the background."""
        for group in list(member.groups):
            local = self.members.get(group)
            if local is not None:
                local.discard(member)
            self._changed(group)
        member.groups.clear()

    def _changed(self, group: str) -> Awaitable[None]:
        """Start (or re-arm) the serial task that makes the layer match the local set."""
        self._ensure_refresher()
        task = self._syncing.get(group)
        if task is None or task.done():
            task = self._syncing[group] = asyncio.ensure_future(self._sync(group))
        else:
            self._dirty.add(group)
        return asyncio.shield(task)

    async def _sync(self, group: str) -> None:
        try:
            while True:
                self._dirty.discard(group)
                wanted = bool(self.members.get(group))
                try:
                    if wanted and group not in self.joined:
                        self._listen(group)
                        await self.layer.group_add(group, self.channel_for(group))
                        self.joined.add(group)
                    elif not wanted and group in self.joined:
                        await self.layer.group_discard(group, self.channel_for(group))
                        self.joined.discard(group)
                except Exception:
                    # The layer is down: try again shortly (the refresher would too).
                    logger.exception("could not update this interface's membership of group %s", group)
                    self._dirty.add(group)
                    await asyncio.sleep(RETRY_SECONDS)
                if not wanted and group not in self.joined:
                    self.members.pop(group, None)
                    self._stop_listening(group)
                if group not in self._dirty:
                    return
        finally:
            if self._syncing.get(group) is asyncio.current_task():
                del self._syncing[group]

    # --- delivery ---------------------------------------------------------------------

    def _listen(self, group: str) -> None:
        listener = self._listeners.get(group)
        if listener is None or listener.done():
            self._listeners[group] = asyncio.ensure_future(self._fan_out(group))

    def _stop_listening(self, group: str) -> None:
        listener = self._listeners.pop(group, None)
        if listener is not None:
            listener.cancel()

    async def _fan_out(self, group: str) -> None:
        """Hand every message of ``group`` to its local members."""
        channel = self.channel_for(group)
        while True:
            message = await self.layer.receive(channel)
            self.group_messages += 1
            for member in list(self.members.get(group, ())):
                try:
                    await member.deliver_group_message(message)
                except Exception:
                    logger.exception("delivering a message of group %s to a socket failed", group)

    # --- renewal ------------------------------------------------------------------------

    def _ensure_refresher(self) -> None:
        if self.refresh_interval > 0 and (self._refresher is None or self._refresher.done()):
            self._refresher = asyncio.ensure_future(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            await self.refresh()

    async def refresh(self) -> None:
        """Renew every membership (new timestamps; lost ones come back after a Redis restart)."""
        for group in list(self.joined):
            if not self.members.get(group):
                continue
            try:
                await self.layer.group_add(group, self.channel_for(group))
            except Exception:
                logger.exception("could not renew this interface's membership of group %s", group)
        for group in [g for g, local in self.members.items() if local and g not in self.joined]:
            self._changed(group)

    async def close(self) -> None:
        """Leave every group (interface shutdown) and stop the background tasks."""
        for group in list(self.joined):
            try:
                await self.layer.group_discard(group, self.channel_for(group))
            except Exception:
                logger.exception("could not leave group %s", group)
        self.joined.clear()
        tasks = [*self._listeners.values(), *self._syncing.values()]
        if self._refresher is not None:
            tasks.append(self._refresher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._listeners.clear()
        self._syncing.clear()
