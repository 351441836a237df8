"""The embedded default store: one SQLite file in WAL mode under the data dir.

Each thread has its own connection. Writes take the write lock up front
(BEGIN IMMEDIATE), so concurrent writers queue on the busy timeout instead of failing
on lock upgrades; synchronous=FULL makes a commit durable before it is acknowledged.
Never put the file on a network volume: SQLite's locking is not safe there (use the
PostgreSQL store for several replicas).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tlserve.server.errors import Unavailable
from tlserve.server.fsutil import exclusive_lock
from tlserve.server.store.sql import Cursor, SqlFeedbackStore

_LOCK_RETRIES = 20


class SqliteFeedbackStore(SqlFeedbackStore):
    def __init__(self, path: Path, busy_timeout_ms: int = 10_000) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self.migrate()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_ms / 1000,
            )
            connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            self._local.connection = connection
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _write_transaction(self) -> Iterator[Cursor]:
        connection = self._connection()
        for attempt in range(_LOCK_RETRIES):
            try:
                connection.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                # The busy timeout already waited; a few more tries ride out a long
                # checkpoint before telling the client to come back later.
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if attempt == _LOCK_RETRIES - 1:
                    raise Unavailable("the feedback store is busy; retry shortly") from None
                time.sleep(0.05 * (attempt + 1))
        cursor = connection.cursor()
        try:
            yield cursor
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @contextmanager
    def _read_transaction(self) -> Iterator[Cursor]:
        connection = self._connection()
        connection.execute("BEGIN")
        try:
            yield connection.cursor()
        finally:
            connection.execute("COMMIT")

    @contextmanager
    def training_lock(self) -> Iterator[None]:
        # SQLite lives on one machine's disk, so an OS file lock beside it is enough.
        # One lock per model, so one model's run never waits for another's.
        suffix = f".training.{self.model}.lock" if self.model else ".training.lock"
        with exclusive_lock(self.path.with_suffix(suffix)):
            yield

    def integrity_check(self) -> str:
        with self._read() as cursor:
            cursor.execute("PRAGMA integrity_check")
            return str(cursor.fetchone()[0])

    def _close_connections(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()
