"""``PostgresChannelLayer``: the table layer on PostgreSQL, woken by LISTEN/NOTIFY.

Every process reaches the same tables (``store``) over the network; the layer API, the
pollers and the guarantees are the table layer's (``channels_kit.layers.table``). A send
signals its route's NOTIFY channel on commit; the process's ``listener`` thread wakes the
pollers that fetch that route, so a message is taken as soon as it is committed. Until a
route's LISTEN is in place (and whenever notifications could have been missed) the
pollers look by themselves, every ``max_poll`` seconds at most; afterwards every
``idle_poll`` seconds as a safety net.

While the server is unreachable, pollers retry with backoff (nothing is handed to the
waiting ``receive()`` calls) and sends raise ``psycopg.OperationalError``; both reconnect
on their own when it is back.

Do not point it at PgBouncer in transaction pooling mode: LISTEN needs a session.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import psycopg

from channels_kit.layers.postgres.listener import Listener
from channels_kit.layers.postgres.store import PostgresStore
from channels_kit.layers.table import TableChannelLayer


class PostgresChannelLayer(TableChannelLayer):
    """A channel layer on PostgreSQL tables, shared by every process that reaches the server."""

    transient_errors = (psycopg.OperationalError,)

    def __init__(
        self, url: str, connect_timeout: float = 5.0, application_name: str = "channels-kit", **options: Any
    ) -> None:
        super().__init__(**options)
        self.url = url
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self._listener: Listener | None = None

    def open_store(self) -> PostgresStore:
        return PostgresStore(self.url, self.connect_timeout, self.application_name)

    def watch(self, routes: Collection[str]) -> bool:
        if self._listener is None:
            self._listener = Listener(
                self.url, self.prefix, self.poke, self.connect_timeout, self.application_name
            )
        return self._listener.watch(routes)

    def forked(self) -> None:
        # The parent's thread did not come along; its pipe and connection are the parent's.
        self._listener = None

    async def close(self) -> None:
        """Stop this event loop's reading, the LISTEN thread, and close this process's connection."""
        await super().close()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
