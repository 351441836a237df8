"""The scale-out store: PostgreSQL through psycopg 3 and a connection pool.

Use it when several server replicas and the trainer run as separate pods. Every
method runs in its own transaction; commits are durable before they return.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg_pool import ConnectionPool

from tlserve.server.store.sql import Cursor, SqlFeedbackStore

IDEMPOTENCY_LOCK_SPACE = 7319003
SAMPLE_LOCK_SPACE = 7319005
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresFeedbackStore(SqlFeedbackStore):
    blob_type = "BYTEA"
    serial_type = "BIGSERIAL PRIMARY KEY"
    skip_first = "OFFSET"

    def __init__(
        self, dsn: str, *, schema: str = "public", min_size: int = 1, max_size: int = 8
    ) -> None:
        super().__init__()
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema name {schema!r} must match {_SCHEMA_NAME.pattern}")
        self.schema = schema

        def configure(connection: Any) -> None:
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            connection.execute(f"SET search_path TO {schema}")
            connection.commit()

        self.pool = ConnectionPool(
            dsn, min_size=min_size, max_size=max_size, configure=configure, open=True
        )
        self.pool.wait(timeout=30)
        self.migrate()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    @contextmanager
    def _write_transaction(self) -> Iterator[Cursor]:
        with self.pool.connection() as connection, connection.transaction():
            yield connection.cursor()

    def _lock_idempotency_key(self, cursor: Cursor, key: str) -> None:
        # Two-key form: its own namespace, apart from the migration and training locks.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (IDEMPOTENCY_LOCK_SPACE, key)
        )

    def _lock_sample(self, cursor: Cursor, sample_id: str) -> None:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SAMPLE_LOCK_SPACE, sample_id)
        )

    def _lock_training_requests(self, cursor: Cursor) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(7319004)")

    def _lock_for_migration(self, cursor: Cursor) -> None:
        # Replicas starting together must not both apply a migration.
        cursor.execute("SELECT pg_advisory_xact_lock(7319001)")

    def _hash_anti_joins(self, cursor: Cursor) -> None:
        # Kept predictions against labels: for tables PostgreSQL has no statistics for (a
        # fresh deployment; autovacuum off) it estimated ~50 rows each and chose a nested
        # loop that rescanned every label per prediction: 22 s for 8,000 predictions,
        # against 30 ms as a hash anti-join.
        cursor.execute("SET LOCAL enable_nestloop = off")

    @contextmanager
    def _read_transaction(self) -> Iterator[Cursor]:
        with self.pool.connection() as connection, connection.transaction():
            yield connection.cursor()

    @contextmanager
    def training_lock(self) -> Iterator[None]:
        # A session advisory lock: released by PostgreSQL itself if the holder dies.
        # The default model keeps the one-key lock earlier releases take (a trainer of
        # either release excludes the other); a named model's is the two-key form, its
        # own space, so one model's run never waits for another's.
        key, args = ("7319002", ()) if not self.model else ("7319002, hashtext(%s)", (self.model,))
        with self.pool.connection() as connection:
            connection.execute(f"SELECT pg_advisory_lock({key})", args)
            try:
                yield
            finally:
                connection.execute(f"SELECT pg_advisory_unlock({key})", args)

    def _close_connections(self) -> None:
        self.pool.close()
