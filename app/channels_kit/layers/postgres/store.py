"""The PostgreSQL layer's store: three UNLOGGED tables that every process reaches over the network.

- ``channels_kit_messages``: one row per message. A receiver takes rows with ``DELETE ...
  FOR UPDATE SKIP LOCKED``: concurrent receivers of a channel never get the same row, and
  none waits for another.
- ``channels_kit_groups``: memberships with their expiry time.
- ``channels_kit_workers``: the workers' published states (``channels_status``).

UNLOGGED: no write-ahead log, so a send costs no disk flush. A crash of the server (not a
clean restart) empties the tables, as a Redis restart empties Redis. Every send that adds
a row also signals ``NOTIFY ck_<md5(prefix route)>`` on commit, which the receiving
processes LISTEN to (``listener``). A send's capacity check and insert run under a
transaction-scoped advisory lock of the channel, so ``ChannelFull`` is exact.

The tables are created by the first process that finds them missing (under an advisory
lock); the database user needs to be allowed to create tables, as the kit's own is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import psycopg

from channels_kit.layers.table.store import Row

MESSAGES, GROUPS, WORKERS = "channels_kit_messages", "channels_kit_groups", "channels_kit_workers"
SCHEMA = f"""
CREATE UNLOGGED TABLE IF NOT EXISTS {MESSAGES} (
    id bigserial PRIMARY KEY,
    ns text NOT NULL,
    route text NOT NULL,
    channel text NOT NULL,
    sent double precision NOT NULL,
    expires double precision NOT NULL,
    data bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS {MESSAGES}_by_route ON {MESSAGES} (ns, route, id);
CREATE INDEX IF NOT EXISTS {MESSAGES}_by_channel ON {MESSAGES} (ns, channel, expires);
CREATE INDEX IF NOT EXISTS {MESSAGES}_by_expiry ON {MESSAGES} (expires);
CREATE UNLOGGED TABLE IF NOT EXISTS {GROUPS} (
    ns text NOT NULL,
    name text NOT NULL,
    channel text NOT NULL,
    expires double precision NOT NULL,
    PRIMARY KEY (ns, name, channel)
);
CREATE INDEX IF NOT EXISTS {GROUPS}_by_expiry ON {GROUPS} (expires);
CREATE UNLOGGED TABLE IF NOT EXISTS {WORKERS} (
    ns text NOT NULL,
    key text NOT NULL,
    state text NOT NULL,
    expires double precision NOT NULL,
    PRIMARY KEY (ns, key)
)
"""
# pg_advisory_xact_lock key of the schema's creation (any fixed number of the kit's).
SCHEMA_LOCK = 0x63686B74  # "chkt"

# The NOTIFY channel of a route, computed alike here and in SQL (wake_name).
WAKE_SQL = "'ck_' || md5(%(ns)s || ' ' || {route})"

SEND = f"""
WITH sent AS (
    INSERT INTO {MESSAGES} (ns, route, channel, sent, expires, data)
    SELECT %(ns)s, %(route)s, %(channel)s, %(now)s, %(expires)s, %(data)s
    WHERE (
        SELECT count(*) FROM {MESSAGES}
        WHERE ns = %(ns)s AND channel = %(channel)s AND expires > %(now)s
    ) < %(capacity)s
    RETURNING route
)
SELECT pg_notify({WAKE_SQL.format(route="route")}, '') FROM sent
"""
# Several sends in one statement (a group send); full channels are skipped.
SEND_MANY = f"""
WITH batch AS (
    SELECT * FROM unnest(%(routes)s::text[], %(channels)s::text[], %(data)s::bytea[], %(capacities)s::int[])
        AS b(route, channel, data, capacity)
), sent AS (
    INSERT INTO {MESSAGES} (ns, route, channel, sent, expires, data)
    SELECT %(ns)s, b.route, b.channel, %(now)s, %(expires)s, b.data FROM batch b
    WHERE (
        SELECT count(*) FROM {MESSAGES}
        WHERE ns = %(ns)s AND channel = b.channel AND expires > %(now)s
    ) < b.capacity
    RETURNING route
)
SELECT count(*), count(pg_notify({WAKE_SQL.format(route="route")}, '')) FROM sent
"""
TAKE = f"""
DELETE FROM {MESSAGES} WHERE id IN (
    SELECT id FROM {MESSAGES}
    WHERE ns = %(ns)s AND route = %(route)s AND expires > %(now)s
    ORDER BY id LIMIT %(count)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, channel, sent, expires, data
"""
PUT_BACK = f"""
WITH back AS (
    INSERT INTO {MESSAGES} (ns, route, channel, sent, expires, data)
    SELECT %(ns)s, * FROM unnest(
        %(routes)s::text[], %(channels)s::text[], %(sent)s::float8[], %(expires)s::float8[], %(data)s::bytea[]
    )
    RETURNING route
)
SELECT count(*), count(pg_notify({WAKE_SQL.format(route="route")}, '')) FROM back
"""


def wake_name(ns: str, route: str) -> str:
    """The NOTIFY channel that a send to ``route`` signals (as ``WAKE_SQL`` computes it)."""
    return "ck_" + hashlib.md5(f"{ns} {route}".encode(), usedforsecurity=False).hexdigest()


def connect(url: str, connect_timeout: float, application_name: str) -> psycopg.Connection:
    """A connection in autocommit mode: each statement is its own transaction unless said.
    ``application_name`` is what ``pg_stat_activity`` shows for it."""
    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=max(1, round(connect_timeout)),
        application_name=application_name,
    )


class PostgresStore:
    """One process's connection to the layer's tables (used from one thread at a time)."""

    def __init__(
        self, url: str, connect_timeout: float = 5.0, application_name: str = "channels-kit"
    ) -> None:
        self.db = connect(url, connect_timeout, application_name)
        (exists,) = self.db.execute("SELECT to_regclass(%s) IS NOT NULL", (WORKERS,)).fetchone()
        if not exists:
            with self.db.transaction():
                # Processes starting together: one creates, the others find it made.
                self.db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for statement in SCHEMA.split(";"):
                    self.db.execute(statement)

    def close(self) -> None:
        self.db.close()

    def housekeeping(self, now: float) -> None:
        """Drop expired messages, memberships and worker states of every layer."""
        with self.db.transaction():
            for table in (MESSAGES, GROUPS, WORKERS):
                self.db.execute(f"DELETE FROM {table} WHERE expires <= %s", (now,))

    # --- messages -----------------------------------------------------------------

    def send(
        self, ns: str, route: str, channel: str, data: bytes, now: float, expiry: float, capacity: int
    ) -> bool:
        """Append a message unless ``channel`` holds ``capacity`` live ones; False when full."""
        with self.db.transaction():
            # Counting and inserting under the channel's lock: two senders never both take
            # the last place.
            self.db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{ns} {channel}",))
            parameters = {
                "ns": ns,
                "route": route,
                "channel": channel,
                "now": now,
                "expires": now + expiry,
                "data": data,
                "capacity": capacity,
            }
            return self.db.execute(SEND, parameters).fetchone() is not None

    def send_many(
        self, ns: str, messages: Sequence[tuple[str, str, bytes, int]], now: float, expiry: float
    ) -> int:
        """Several sends in one statement (a group send); full channels are skipped, as a
        group send does on every layer (capacity is checked without the channel's lock)."""
        if not messages:
            return 0
        routes, channels, data, capacities = (list(column) for column in zip(*messages, strict=True))
        parameters = {
            "ns": ns,
            "routes": routes,
            "channels": channels,
            "data": data,
            "capacities": capacities,
            "now": now,
            "expires": now + expiry,
        }
        (sent, _) = self.db.execute(SEND_MANY, parameters).fetchone()
        return sent

    def take(self, ns: str, wanted: Sequence[tuple[str, int]], now: float) -> dict[str, list[Row]]:
        """Remove and return up to ``count`` of the oldest live messages of each route."""
        taken: dict[str, list[Row]] = {}
        for route, count in wanted:
            rows = self.db.execute(TAKE, {"ns": ns, "route": route, "now": now, "count": count}).fetchall()
            if rows:
                taken[route] = sorted((Row(*row) for row in rows), key=lambda row: row.id)
        return taken

    def put_back(self, ns: str, rows: Iterable[tuple[str, str, Row]]) -> int:
        """Return messages that were taken but never delivered (a stopping worker)."""
        rows = list(rows)
        if not rows:
            return 0
        parameters = {
            "ns": ns,
            "routes": [route for route, _, _ in rows],
            "channels": [channel for _, channel, _ in rows],
            "sent": [row.sent for _, _, row in rows],
            "expires": [row.expires for _, _, row in rows],
            "data": [row.data for _, _, row in rows],
        }
        (count, _) = self.db.execute(PUT_BACK, parameters).fetchone()
        return count

    # --- groups -------------------------------------------------------------------

    def group_add(self, ns: str, group: str, channel: str, expires: float) -> None:
        self.db.execute(
            f"INSERT INTO {GROUPS} (ns, name, channel, expires) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (ns, name, channel) DO UPDATE SET expires = EXCLUDED.expires",
            (ns, group, channel, expires),
        )

    def group_discard(self, ns: str, group: str, channel: str) -> None:
        self.db.execute(
            f"DELETE FROM {GROUPS} WHERE ns = %s AND name = %s AND channel = %s", (ns, group, channel)
        )

    def members(self, ns: str, group: str, now: float) -> list[str]:
        rows = self.db.execute(
            f"SELECT channel FROM {GROUPS} WHERE ns = %s AND name = %s AND expires > %s", (ns, group, now)
        ).fetchall()
        return [row[0] for row in rows]

    def flush(self, ns: str) -> None:
        with self.db.transaction():
            for table in (MESSAGES, GROUPS, WORKERS):
                self.db.execute(f"DELETE FROM {table} WHERE ns = %s", (ns,))

    # --- inspection ----------------------------------------------------------------

    def queues(self, ns: str, now: float) -> list[tuple[str, int, float]]:
        """(route, depth, oldest send time) of every non-empty queue."""
        return self.db.execute(
            f"SELECT route, count(*), min(sent) FROM {MESSAGES} "
            "WHERE ns = %s AND expires > %s GROUP BY route",
            (ns, now),
        ).fetchall()

    def save_worker(self, ns: str, key: str, state: str, expires: float) -> None:
        self.db.execute(
            f"INSERT INTO {WORKERS} (ns, key, state, expires) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (ns, key) DO UPDATE SET state = EXCLUDED.state, expires = EXCLUDED.expires",
            (ns, key, state, expires),
        )

    def delete_worker(self, ns: str, key: str) -> None:
        self.db.execute(f"DELETE FROM {WORKERS} WHERE ns = %s AND key = %s", (ns, key))

    def workers(self, ns: str, now: float) -> list[str]:
        rows = self.db.execute(
            f"SELECT state FROM {WORKERS} WHERE ns = %s AND expires > %s", (ns, now)
        ).fetchall()
        return [row[0] for row in rows]
