"""LISTEN for the routes a process receives on, and wake its pollers on NOTIFY.

One thread and one connection per process. Pollers say which routes they fetch
(``watch``); the thread LISTENs to each route's channel once and keeps listening (a
process receives on few routes: its own ``!`` part and the channels it serves). While a
route's LISTEN is not yet in place, ``watch`` answers False and the pollers keep polling
on their own; after a lost connection the thread reconnects with backoff, LISTENs again
and wakes every poller, since a notification may have been missed meanwhile.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable, Collection

import psycopg
from psycopg import sql

from channels_kit.layers.postgres.store import connect, wake_name

logger = logging.getLogger(__name__)

# With nothing to read for this long, the thread checks that its connection is alive.
KEEPALIVE_SECONDS = 15.0
RETRY_SECONDS, MAX_RETRY_SECONDS = 0.5, 5.0


class Listener:
    """The LISTEN connection of one process; ``wake(routes)`` is called on its thread."""

    def __init__(
        self,
        url: str,
        ns: str,
        wake: Callable[[Collection[str] | None], None],
        connect_timeout: float,
        application_name: str,
    ) -> None:
        self.url, self.ns, self.wake = url, ns, wake
        self.connect_timeout, self.application_name = connect_timeout, application_name
        self.lock = threading.Lock()
        self.routes: dict[str, str] = {}  # NOTIFY channel -> route
        self.listening: set[str] = set()  # NOTIFY channels whose LISTEN is in place
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.kick_read, self.kick_write = os.pipe()

    def watch(self, routes: Collection[str]) -> bool:
        """LISTEN to ``routes`` from now on; True when that is in place for all of them."""
        names = [wake_name(self.ns, route) for route in routes]
        with self.lock:
            new = [(n, route) for n, route in zip(names, routes, strict=True) if n not in self.routes]
            self.routes.update(new)
            in_place = self.listening.issuperset(names)
        if new:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="channels-kit-listen", daemon=True)
                self.thread.start()
            os.write(self.kick_write, b".")
        return in_place

    def stop(self) -> None:
        """End the thread and close its connection."""
        self.stopping.set()
        os.write(self.kick_write, b".")
        if self.thread is not None:
            self.thread.join(timeout=5)
        os.close(self.kick_read)
        os.close(self.kick_write)

    def _run(self) -> None:
        retry = RETRY_SECONDS
        while not self.stopping.is_set():
            try:
                with connect(self.url, self.connect_timeout, self.application_name) as db:
                    retry = RETRY_SECONDS
                    self._listen(db)
            except psycopg.OperationalError as exc:
                with self.lock:
                    self.listening.clear()
                if self.stopping.is_set():
                    return
                logger.warning("the layer's LISTEN connection failed (%s); again in %.1f s", exc, retry)
                self.stopping.wait(retry)
                retry = min(retry * 2, MAX_RETRY_SECONDS)
            except Exception:  # the pollers still poll; say so, and try again
                logger.exception("the layer's LISTEN thread failed; again in %.1f s", MAX_RETRY_SECONDS)
                with self.lock:
                    self.listening.clear()
                self.stopping.wait(MAX_RETRY_SECONDS)

    def _listen(self, db: psycopg.Connection) -> None:
        """LISTEN to what is wanted, then hand on notifications until stopped or disconnected."""
        first = True
        while not self.stopping.is_set():
            with self.lock:
                todo = [name for name in self.routes if name not in self.listening]
            for name in todo:
                db.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
            with self.lock:
                self.listening.update(todo)
            if first:
                # Messages sent while nobody listened (a reconnect) have woken nobody.
                self.wake(None)
                first = False
            ready, _, _ = select.select([db.fileno(), self.kick_read], [], [], KEEPALIVE_SECONDS)
            if self.kick_read in ready:
                os.read(self.kick_read, 4096)
            if not ready:
                db.execute("SELECT 1")
            with self.lock:
                routes = {self.routes.get(notify.channel) for notify in db.notifies(timeout=0)}
            routes.discard(None)
            if routes:
                self.wake(routes)
