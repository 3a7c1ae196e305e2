"""The same-host layer's store: one SQLite file in WAL mode that every process of a host opens.

Why SQLite: the processes of one machine (or the containers of one host, through a
volume) share it with no server; every change is a transaction, so a process killed at
any moment leaves the file consistent (WAL: readers never block the writer, and a
crashed writer's half-written transaction is rolled back by the next opener); and each
process opens its own connection, in a thread of its own, after any fork, so no
connection or lock ever crosses a fork. ``docs/channel-layer.md`` weighs it against
shared memory.

All methods are synchronous and run on the layer's one thread (``LocalChannelLayer``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from channels_kit.layers.table.store import Row

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ns TEXT NOT NULL,          -- the layer's prefix: layers with others share the file apart
    route TEXT NOT NULL,       -- the channel, or for a '!' channel its process's part (up to '!')
    channel TEXT NOT NULL,
    sent REAL NOT NULL,
    expires REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_route ON messages (ns, route, id);
CREATE INDEX IF NOT EXISTS messages_by_channel_expiry ON messages (ns, channel, expires);
CREATE TABLE IF NOT EXISTS groups (
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    channel TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (ns, name, channel)
);
CREATE TABLE IF NOT EXISTS processes (
    id TEXT PRIMARY KEY,
    boot_id TEXT NOT NULL,
    hostname TEXT NOT NULL,
    seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (ns, key)
);
"""

# Waiting for the write lock: how often to try again, and for how long at most.
LOCK_RETRY_SECONDS = 0.0002
LOCK_WAIT_SECONDS = 30.0
# How long a process counts as alive after its last sign in the file.
PROCESS_ALIVE_SECONDS = 30.0
# File systems that reach other machines: SQLite's locks and WAL index do not hold there,
# so processes on two hosts would corrupt the file or split silently.
NETWORK_FILE_SYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smbfs", "smb3", "ceph", "glusterfs", "fuse.sshfs", "lustre", "gpfs", "9p"}
)


INSERT_MESSAGE = "INSERT INTO messages (ns, route, channel, sent, expires, data) VALUES (?, ?, ?, ?, ?, ?)"


class SplitHostsError(RuntimeError):
    """The store is (or would be) shared by processes of different machines."""


def boot_id() -> str:
    """This kernel's boot id: the same in every process and container of one host."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def file_system_of(path: Path) -> str:
    """The type of the file system holding ``path`` (from /proc/mounts; '' when unknown)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    target = str(path.resolve())
    best, kind = "", ""
    for mount_point, fs_type in mounts:
        mount_point = mount_point.replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > len(best):
            best, kind = mount_point, fs_type
    return kind


class Store:
    """One process's connection to the shared file (open it on the thread that uses it)."""

    def __init__(self, path: Path, process_id: str) -> None:
        fs_type = file_system_of(path.parent)
        if fs_type in NETWORK_FILE_SYSTEMS:
            raise SplitHostsError(
                f"the same-host channel layer's file {path} is on {fs_type}, a network file system: "
                "processes on several machines would not share it safely. Keep it on a local disk "
                "(one host), or use a backend with a server (CHANNEL_BACKEND=redis)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.process_id = process_id
        self.boot_id = boot_id()
        self.pid = os.getpid()
        # timeout=0: waiting for the write lock is _Immediate's job (a short, steady retry).
        self.db = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        # Even this may meet a lock (another process switching the file to WAL, or
        # recovering it): tried again, like every statement outside a transaction.
        _retry_locked(lambda: self.db.execute("PRAGMA synchronous=NORMAL"))
        # WAL before anything else: in the rollback journal a fresh file starts in, a reader
        # blocks a writer's COMMIT, and processes opening a new file together would trip.
        _retry_locked(lambda: self.db.execute("PRAGMA journal_mode=WAL"))
        with self._transaction():
            # Inside the write lock, so that processes starting together do not race for it.
            for statement in filter(str.strip, SCHEMA.split(";")):
                self.db.execute(statement)
        self.mark_alive()

    def close(self) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM processes WHERE id = ?", (self.process_id,))
        self.db.close()

    def _transaction(self):
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock up front, so nothing retries."""
        return _Immediate(self.db)

    def _read(self, sql: str, parameters: tuple) -> list[tuple]:
        """A query outside a transaction, tried again while the file is locked."""
        rows: list[tuple] = []

        def query() -> None:
            rows[:] = self.db.execute(sql, parameters).fetchall()

        _retry_locked(query)
        return rows

    # --- processes -----------------------------------------------------------------

    def mark_alive(self, now: float | None = None) -> None:
        """Record this process as alive, refusing a file that another machine's processes use."""
        now = time.time() if now is None else now
        with self._transaction():
            others = self.db.execute(
                "SELECT hostname, boot_id FROM processes WHERE boot_id != ? AND seen > ? LIMIT 1",
                (self.boot_id, now - PROCESS_ALIVE_SECONDS),
            ).fetchone()
            if others is not None:
                raise SplitHostsError(
                    f"the same-host channel layer's file {self.path} is in use by a process of another "
                    f"machine ({others[0]}, boot id {others[1]}): processes on several hosts would "
                    "silently miss each other's messages. Give each host its own layer, or use a "
                    "backend with a server (CHANNEL_BACKEND=redis)"
                )
            self.db.execute(
                "INSERT OR REPLACE INTO processes (id, boot_id, hostname, seen) VALUES (?, ?, ?, ?)",
                (self.process_id, self.boot_id, os.uname().nodename, now),
            )

    # --- messages -----------------------------------------------------------------

    def send(
        self, ns: str, route: str, channel: str, data: bytes, now: float, expiry: float, capacity: int
    ) -> bool:
        """Append a message unless ``channel`` holds ``capacity`` live ones; False when full."""
        with self._transaction():
            self.db.execute(
                "DELETE FROM messages WHERE ns = ? AND channel = ? AND expires <= ?", (ns, channel, now)
            )
            (held,) = self.db.execute(
                "SELECT COUNT(*) FROM messages WHERE ns = ? AND channel = ?", (ns, channel)
            ).fetchone()
            if held >= capacity:
                return False
            self.db.execute(
                INSERT_MESSAGE,
                (ns, route, channel, now, now + expiry, data),
            )
            return True

    def take(self, ns: str, wanted: Sequence[tuple[str, int]], now: float) -> dict[str, list[Row]]:
        """Remove and return up to ``count`` of the oldest live messages of each route, in one
        transaction: what this returns is this process's to deliver."""
        taken: dict[str, list[Row]] = {}
        with self._transaction():
            for route, count in wanted:
                rows = self.db.execute(
                    "SELECT id, channel, sent, expires, data FROM messages "
                    "WHERE ns = ? AND route = ? AND expires > ? ORDER BY id LIMIT ?",
                    (ns, route, now, count),
                ).fetchall()
                if rows:
                    self.db.executemany("DELETE FROM messages WHERE id = ?", [(row[0],) for row in rows])
                    taken[route] = [Row(*row) for row in rows]
        return taken

    def put_back(self, ns: str, rows: Iterable[tuple[str, str, Row]]) -> int:
        """Return messages that were taken but never delivered (a stopping worker)."""
        count = 0
        with self._transaction():
            for route, channel, row in rows:
                self.db.execute(
                    INSERT_MESSAGE,
                    (ns, route, channel, row.sent, row.expires, row.data),
                )
                count += 1
        return count

    def housekeeping(self, now: float) -> None:
        """Renew this process's sign of life, then drop what expired."""
        self.mark_alive(now)
        self.purge_expired(now)

    def purge_expired(self, now: float) -> None:
        """Drop expired messages and group memberships of every layer in the file."""
        with self._transaction():
            self.db.execute("DELETE FROM messages WHERE expires <= ?", (now,))
            self.db.execute("DELETE FROM groups WHERE expires <= ?", (now,))
            self.db.execute("DELETE FROM workers WHERE expires <= ?", (now,))
            self.db.execute("DELETE FROM processes WHERE seen <= ?", (now - PROCESS_ALIVE_SECONDS,))

    # --- groups -------------------------------------------------------------------

    def group_add(self, ns: str, group: str, channel: str, expires: float) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO groups (ns, name, channel, expires) VALUES (?, ?, ?, ?)",
                (ns, group, channel, expires),
            )

    def group_discard(self, ns: str, group: str, channel: str) -> None:
        with self._transaction():
            self.db.execute(
                "DELETE FROM groups WHERE ns = ? AND name = ? AND channel = ?", (ns, group, channel)
            )

    def members(self, ns: str, group: str, now: float) -> list[str]:
        rows = self._read(
            "SELECT channel FROM groups WHERE ns = ? AND name = ? AND expires > ?", (ns, group, now)
        )
        return [row[0] for row in rows]

    def send_many(
        self, ns: str, messages: Sequence[tuple[str, str, bytes, int]], now: float, expiry: float
    ) -> int:
        """Several sends in one transaction (a group send); full channels are skipped, as a
        group send does on every layer. Returns how many were sent."""
        sent = 0
        with self._transaction():
            for route, channel, data, capacity in messages:
                (held,) = self.db.execute(
                    "SELECT COUNT(*) FROM messages WHERE ns = ? AND channel = ? AND expires > ?",
                    (ns, channel, now),
                ).fetchone()
                if held < capacity:
                    self.db.execute(
                        INSERT_MESSAGE,
                        (ns, route, channel, now, now + expiry, data),
                    )
                    sent += 1
        return sent

    def flush(self, ns: str) -> None:
        with self._transaction():
            for table in ("messages", "groups", "workers"):
                self.db.execute(f"DELETE FROM {table} WHERE ns = ?", (ns,))

    # --- inspection ----------------------------------------------------------------

    def queues(self, ns: str, now: float) -> list[tuple[str, int, float]]:
        """(channel, depth, oldest send time) of every non-empty queue; a '!' channel's
        queue is its process's route."""
        return self._read(
            "SELECT route, COUNT(*), MIN(sent) FROM messages WHERE ns = ? AND expires > ? GROUP BY route",
            (ns, now),
        )

    def save_worker(self, ns: str, key: str, state: str, expires: float) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO workers (ns, key, state, expires) VALUES (?, ?, ?, ?)",
                (ns, key, state, expires),
            )

    def delete_worker(self, ns: str, key: str) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM workers WHERE ns = ? AND key = ?", (ns, key))

    def workers(self, ns: str, now: float) -> list[str]:
        rows = self._read("SELECT state FROM workers WHERE ns = ? AND expires > ?", (ns, now))
        return [row[0] for row in rows]


class _Immediate:
    """A write transaction taken at once (``BEGIN IMMEDIATE``), committed or rolled back.

    While another process holds the write lock, the attempt is repeated every
    ``LOCK_RETRY_SECONDS`` (for up to ``LOCK_WAIT_SECONDS``): SQLite's own busy handler
    sleeps up to 100 ms between tries, which under steady contention costs more than
    the transactions themselves.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        _retry_locked(lambda: self.db.execute("BEGIN IMMEDIATE"))

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            _retry_locked(lambda: self.db.execute("COMMIT"))
        else:
            self.db.execute("ROLLBACK")


def _retry_locked(operation: Callable[[], object]) -> None:
    """``operation`` again every ``LOCK_RETRY_SECONDS`` while another process holds the lock."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            operation()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(LOCK_RETRY_SECONDS)
