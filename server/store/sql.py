"""The SQL behind both stores. Statements are written once with `?` placeholders;
dialects differ only in types, placeholders, and how a write transaction starts."""

from __future__ import annotations

import copy
import json
import threading
import time
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, Self

import numpy as np

from tlserve.server.errors import (
    AlreadyExists,
    NotFound,
    PermissionDenied,
    StoreTooNew,
    Unavailable,
)
from tlserve.server.store.base import (
    CLEARED,
    RETRACTED,
    FeedbackStore,
    KeptPrediction,
    LabelRecord,
    StoredLabel,
    SuggestStrategy,
    payload_hash,
    sample_id_of,
)


class ClosingGate:
    """Counts the store's calls in progress. `close` refuses new calls and waits for those
    under way, so a store is never closed under a worker thread still using it (a thread
    cannot be cancelled; SQLite crashes on a connection closed mid-statement)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._active = 0
        self._closed = False

    @contextmanager
    def use(self) -> Iterator[None]:
        with self._condition:
            if self._closed:
                raise Unavailable("the feedback store is closed: this server is stopping")
            self._active += 1
        try:
            yield
        finally:
            with self._condition:
                self._active -= 1
                self._condition.notify_all()

    def close(self, timeout: float = 30.0) -> bool:
        """Refuse new calls; True once none is under way (False: `timeout` passed)."""
        with self._condition:
            self._closed = True
            return self._condition.wait_for(lambda: self._active == 0, timeout)


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


# Migrations, in order; `{blob}` and `{serial}` are filled per dialect. Applied ones
# are recorded in schema_migrations, so each runs once, inside one transaction.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE samples (
        id TEXT PRIMARY KEY,
        image {blob} NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE labels (
        seq {serial},
        sample_id TEXT NOT NULL REFERENCES samples(id),
        label TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        idempotency_key TEXT UNIQUE,
        payload_hash TEXT,
        prediction_id TEXT,
        model_version TEXT,
        predicted_label TEXT
    );
    CREATE INDEX labels_by_sample ON labels (sample_id, seq);
    CREATE INDEX labels_by_prediction ON labels (prediction_id);
    CREATE INDEX labels_by_version ON labels (model_version);
    CREATE TABLE predictions (
        id TEXT PRIMARY KEY,
        model_version TEXT NOT NULL,
        backbone_id TEXT NOT NULL,
        labels TEXT NOT NULL,
        probabilities {blob} NOT NULL,
        features {blob} NOT NULL,
        pixels {blob} NOT NULL,
        pixels_shape TEXT NOT NULL,
        least_confidence DOUBLE PRECISION NOT NULL,
        margin DOUBLE PRECISION NOT NULL,
        entropy DOUBLE PRECISION NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX predictions_by_time ON predictions (created_at);
    CREATE TABLE features (
        sample_id TEXT NOT NULL,
        backbone_id TEXT NOT NULL,
        vector {blob} NOT NULL,
        PRIMARY KEY (sample_id, backbone_id)
    );
    """,
    """
    CREATE TABLE training_requests (
        id {serial},
        reason TEXT NOT NULL,
        requested_at DOUBLE PRECISION NOT NULL,
        handled_at DOUBLE PRECISION,
        run_id TEXT
    );
    """,
    # Who labeled (the authenticated principal, never a client-claimed field), and the
    # new labels an admin let into training.
    """
    ALTER TABLE labels ADD COLUMN principal TEXT NOT NULL DEFAULT 'unknown';
    CREATE INDEX labels_by_label ON labels (label);
    CREATE TABLE approved_labels (
        label TEXT PRIMARY KEY,
        approved_by TEXT NOT NULL,
        approved_at DOUBLE PRECISION NOT NULL
    );
    """,
    # The image as the model saw it, on kept predictions and labels: an image labeled once
    # (through any prediction of it, or sent as a file) is never suggested again.
    """
    ALTER TABLE predictions ADD COLUMN content_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE labels ADD COLUMN content_id TEXT;
    CREATE INDEX predictions_by_content ON predictions (content_id);
    CREATE INDEX labels_by_content ON labels (content_id);
    """,
    # What the trainer last reported (one row), for every server replica to show.
    """
    CREATE TABLE trainer_status (
        id INTEGER PRIMARY KEY,
        document TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    """,
    # Several models on one store: labels, kept predictions, training requests, approvals
    # and the trainer's status belong to a model ('' is the default model, so what an
    # earlier release stored is the default model's). Samples and features are content-
    # addressed and shared. Two tables are rebuilt because their keys gain the model.
    """
    ALTER TABLE labels ADD COLUMN model TEXT NOT NULL DEFAULT '';
    CREATE INDEX labels_by_model_sample ON labels (model, sample_id, seq);
    ALTER TABLE predictions ADD COLUMN model TEXT NOT NULL DEFAULT '';
    CREATE INDEX predictions_by_model_time ON predictions (model, created_at);
    ALTER TABLE training_requests ADD COLUMN model TEXT NOT NULL DEFAULT '';
    CREATE TABLE approved_labels_by_model (
        model TEXT NOT NULL,
        label TEXT NOT NULL,
        approved_by TEXT NOT NULL,
        approved_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (model, label)
    );
    INSERT INTO approved_labels_by_model (model, label, approved_by, approved_at)
        SELECT '', label, approved_by, approved_at FROM approved_labels;
    DROP TABLE approved_labels;
    ALTER TABLE approved_labels_by_model RENAME TO approved_labels;
    CREATE TABLE trainer_status_by_model (
        model TEXT PRIMARY KEY,
        document TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    INSERT INTO trainer_status_by_model (model, document, updated_at)
        SELECT '', document, updated_at FROM trainer_status;
    DROP TABLE trainer_status;
    ALTER TABLE trainer_status_by_model RENAME TO trainer_status;
    """,
    # Champion/challenger experiments: the head that scored a prediction beside the one
    # that answered (its version and top label), kept on the prediction and copied onto a
    # label given by its id, so each such label is a pair for the paired test.
    """
    ALTER TABLE predictions ADD COLUMN shadow_version TEXT;
    ALTER TABLE predictions ADD COLUMN shadow_label TEXT;
    ALTER TABLE labels ADD COLUMN shadow_version TEXT;
    ALTER TABLE labels ADD COLUMN shadow_label TEXT;
    """,
]

_PREDICTION_COLUMNS = (
    "id, model_version, backbone_id, labels, probabilities, features, pixels, pixels_shape, "
    "created_at, content_id, shadow_version, shadow_label"
)
# The same row with an empty image, for picking among many candidates cheaply.
_PREDICTION_COLUMNS_NO_PIXELS = _PREDICTION_COLUMNS.replace("pixels, pixels_shape", "NULL, '[0]'")


_LABEL_COLUMNS = "l.seq, l.sample_id, l.label, l.source, l.created_at, l.principal"


def _label_record(row: Sequence[Any]) -> LabelRecord:
    return LabelRecord(int(row[0]), row[1], row[2], row[3], float(row[4]), row[5])


def _vector(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def _prediction_row(p: KeptPrediction) -> tuple[Any, ...]:
    return (
        p.prediction_id,
        p.model_version,
        p.backbone_id,
        json.dumps(list(p.labels)),
        _vector(p.probabilities),
        _vector(p.features),
        # Raw: even zlib's fastest level costs ~3 ms per 224x224 image, which serving
        # throughput pays for; kept predictions are pruned by count and age anyway.
        np.ascontiguousarray(p.pixels, dtype=np.uint8).tobytes(),
        json.dumps(list(p.pixels.shape)),
        p.uncertainty("least_confidence"),
        p.uncertainty("margin"),
        p.uncertainty("entropy"),
        p.created_at,
        p.content,
        p.shadow_version or None,
        p.shadow_label or None,
    )


def _prediction_from_row(row: Sequence[Any]) -> KeptPrediction:
    shape = tuple(json.loads(row[7]))
    return KeptPrediction(
        prediction_id=row[0],
        model_version=row[1],
        backbone_id=row[2],
        labels=tuple(json.loads(row[3])),
        probabilities=np.frombuffer(bytes(row[4]), dtype="<f4"),
        features=np.frombuffer(bytes(row[5]), dtype="<f4"),
        pixels=np.frombuffer(bytes(row[6] or b""), dtype=np.uint8).reshape(shape),
        created_at=float(row[8]),
        content_id=row[9],
        shadow_version=row[10] or "",
        shadow_label=row[11] or "",
    )


class SqlFeedbackStore(FeedbackStore):
    blob_type = "BLOB"
    serial_type = "INTEGER PRIMARY KEY AUTOINCREMENT"
    skip_first = "LIMIT -1 OFFSET"  # "all rows after the first N"

    def __init__(self) -> None:
        self._gate = ClosingGate()
        # Whose labels, predictions, requests and status this view reads and writes; ''
        # is the default model. Views share the connections and the closing gate.
        self.model = ""

    def for_model(self, model: str) -> Self:
        view = copy.copy(self)
        view.model = model
        return view

    @abstractmethod
    def _write_transaction(self) -> AbstractContextManager[Cursor]:
        """A cursor inside a write transaction, committed (durably) on normal exit."""

    @abstractmethod
    def _read_transaction(self) -> AbstractContextManager[Cursor]:
        """A cursor for consistent reads."""

    @abstractmethod
    def _close_connections(self) -> None:
        """Close every connection; no call is using one any more."""

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        with self._gate.use(), self._write_transaction() as cursor:
            yield cursor

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        with self._gate.use(), self._read_transaction() as cursor:
            yield cursor

    def close(self) -> None:
        self._gate.close()
        self._close_connections()

    def _sql(self, statement: str) -> str:
        return statement

    def _lock_for_migration(self, cursor: Cursor) -> None:
        """Serialise concurrent migrators (SQLite's BEGIN IMMEDIATE already does)."""

    def _lock_idempotency_key(self, cursor: Cursor, key: str) -> None:
        """Serialise submissions of one idempotency key until the transaction ends, so the
        second sees the first's row instead of racing it into the unique index (SQLite's
        BEGIN IMMEDIATE already serialises every writer)."""

    def _lock_sample(self, cursor: Cursor, sample_id: str) -> None:
        """Serialise retractions of one sample's label (SQLite: BEGIN IMMEDIATE does)."""

    def _lock_training_requests(self, cursor: Cursor) -> None:
        """Serialise TriggerTraining's check-then-insert (SQLite: BEGIN IMMEDIATE does)."""

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        with self._write() as cursor:
            self._lock_for_migration(cursor)
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            cursor.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            applied = int(cursor.fetchone()[0])
            if applied > len(MIGRATIONS):
                raise StoreTooNew(
                    f"the feedback store has schema version {applied}, written by a newer "
                    f"tlserve; this release knows versions up to {len(MIGRATIONS)}: upgrade "
                    "tlserve, or point TLSERVE_STORE_URL at another store"
                )
            for version, script in enumerate(MIGRATIONS[applied:], start=applied + 1):
                ddl = script.format(blob=self.blob_type, serial=self.serial_type)
                for statement in filter(str.strip, ddl.split(";")):
                    cursor.execute(statement)
                cursor.execute(
                    self._sql("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)"),
                    (version, time.time()),
                )
        return len(MIGRATIONS)

    def add_label(
        self,
        *,
        image: bytes,
        label: str,
        source: str,
        principal: str,
        idempotency_key: str | None = None,
        prediction: KeptPrediction | None = None,
        content_id: str | None = None,
    ) -> StoredLabel:
        sample_id = sample_id_of(image)
        if content_id is None and prediction is not None:
            content_id = prediction.content
        prediction_id = prediction.prediction_id if prediction else None
        promise = payload_hash(sample_id, label, prediction_id, self.model)
        now = time.time()
        with self._write() as cursor:
            if idempotency_key:
                self._lock_idempotency_key(cursor, idempotency_key)
                cursor.execute(
                    self._sql(
                        "SELECT sample_id, label, payload_hash, seq, principal FROM labels "
                        "WHERE idempotency_key = ?"
                    ),
                    (idempotency_key,),
                )
                existing = cursor.fetchone()
                if existing is not None:
                    if existing[2] != promise:
                        raise AlreadyExists(
                            f"idempotency key {idempotency_key!r} was already used for a "
                            "different submission (another image, label or prediction)"
                        )
                    previous = self._held_label(
                        cursor, existing[0], existing[4], before_seq=int(existing[3])
                    )
                    return StoredLabel(existing[0], existing[1], True, previous)
            cursor.execute(
                self._sql(
                    "INSERT INTO samples (id, image, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (id) DO NOTHING"
                ),
                (sample_id, image, now),
            )
            previous = self._held_label(cursor, sample_id, principal)
            cursor.execute(
                self._sql(
                    "INSERT INTO labels (model, sample_id, label, source, principal, "
                    "created_at, idempotency_key, payload_hash, prediction_id, model_version, "
                    "predicted_label, content_id, shadow_version, shadow_label) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    self.model,
                    sample_id,
                    label,
                    source,
                    principal,
                    now,
                    idempotency_key or None,
                    promise,
                    prediction_id,
                    prediction.model_version if prediction else None,
                    prediction.top_label if prediction else None,
                    content_id,
                    (prediction.shadow_version or None) if prediction else None,
                    (prediction.shadow_label or None) if prediction else None,
                ),
            )
            if prediction is not None:
                cursor.execute(
                    self._sql(
                        "INSERT INTO features (sample_id, backbone_id, vector) VALUES (?, ?, ?) "
                        "ON CONFLICT (sample_id, backbone_id) DO NOTHING"
                    ),
                    (sample_id, prediction.backbone_id, _vector(prediction.features)),
                )
        return StoredLabel(sample_id, label, False, previous)

    def _held_label(
        self, cursor: Cursor, sample_id: str, principal: str, *, before_seq: int | None = None
    ) -> str | None:
        """The label `principal` holds on the sample (as of just before `before_seq`):
        its newest, unless retracted or cleared by an admin since."""
        bound, params = ("AND seq < ? ", (before_seq,)) if before_seq is not None else ("", ())
        cursor.execute(
            self._sql(
                "SELECT label, seq FROM labels WHERE sample_id = ? AND model = ? AND "
                f"principal = ? {bound}ORDER BY seq DESC LIMIT 1"
            ),
            (sample_id, self.model, principal, *params),
        )
        row = cursor.fetchone()
        if row is None or row[0] == RETRACTED:
            return None
        cleared = self._cleared_seq(cursor, sample_id)
        return None if cleared > int(row[1]) else str(row[0])

    def _cleared_seq(self, cursor: Cursor, sample_id: str) -> int:
        """The seq of the sample's newest clearing by an admin (0: never cleared)."""
        cursor.execute(
            self._sql(
                "SELECT COALESCE(MAX(seq), 0) FROM labels WHERE sample_id = ? AND model = ? "
                "AND label = ? AND source = ?"
            ),
            (sample_id, self.model, RETRACTED, CLEARED),
        )
        return int(cursor.fetchone()[0])

    def retract_label(self, sample_id: str, principal: str, *, any_principal: bool = False) -> str:
        with self._write() as cursor:
            self._lock_sample(cursor, sample_id)
            held = self._held_labels(cursor, sample_id)
            own = next((label for _, label, by in held if by == principal), None)
            others = [(label, by) for _, label, by in held if by != principal]
            if own is not None:
                source, retracted = "retract", own
            elif others and any_principal:
                source, retracted = CLEARED, others[-1][0]
            elif others:
                raise PermissionDenied(
                    f"the label of sample {sample_id[:16]}... was given by "
                    f"{', '.join(sorted({by for _, by in others}))}; only its labeler or an "
                    "admin may retract it"
                )
            else:
                raise NotFound(
                    f"sample {sample_id[:16]}... has no label to retract (never labeled, or "
                    "retracted already)"
                )
            cursor.execute(
                self._sql(
                    "INSERT INTO labels (model, sample_id, label, source, principal, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (self.model, sample_id, RETRACTED, source, principal, time.time()),
            )
        return retracted

    def _held_labels(self, cursor: Cursor, sample_id: str) -> list[tuple[int, str, str]]:
        """(seq, label, principal) of every label held on one sample, oldest first."""
        held, params = self._held_sql("WHERE model = ? AND sample_id = ?", (self.model, sample_id))
        cursor.execute(
            self._sql(
                f"SELECT held.seq, held.label, held.principal FROM ({held}) held ORDER BY held.seq"
            ),
            params,
        )
        return [(int(seq), str(label), str(by)) for seq, label, by in cursor.fetchall()]

    def _held_sql(self, where: str, params: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
        """Every label a principal holds on a sample: each principal's newest row of the
        sample (among those `where` selects), unless it is a retraction or an admin
        cleared the sample after it. A query and its parameters."""
        return (
            "SELECT mine.seq, mine.sample_id, mine.label, mine.principal FROM labels mine "
            "JOIN (SELECT sample_id, principal, MAX(seq) AS seq FROM labels "
            f"{where} GROUP BY sample_id, principal) latest ON latest.seq = mine.seq "
            "WHERE mine.label <> ? AND NOT EXISTS (SELECT 1 FROM labels cleared "
            "WHERE cleared.sample_id = mine.sample_id AND cleared.model = mine.model AND "
            "cleared.label = ? AND cleared.source = ? AND cleared.seq > mine.seq)",
            (*params, RETRACTED, RETRACTED, CLEARED),
        )

    def _agreed_sql(self, where: str, params: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
        """The seq of each sample's current label: the newest of the labels held on it,
        when they all agree. A sample whose holders disagree is in conflict: it has none."""
        held, params = self._held_sql(where, params)
        return (
            f"SELECT MAX(held.seq) AS seq FROM ({held}) held GROUP BY held.sample_id "
            "HAVING COUNT(DISTINCT held.label) = 1",
            params,
        )

    def conflicting_samples(
        self, *, principals: Sequence[str] = (), exclude_principals: Sequence[str] = ()
    ) -> int:
        held, params = self._held_sql(*self._labels_by(principals, exclude_principals))
        with self._read() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT COUNT(*) FROM (SELECT held.sample_id FROM ({held}) held "
                    "GROUP BY held.sample_id HAVING COUNT(DISTINCT held.label) > 1) disputed"
                ),
                params,
            )
            return int(cursor.fetchone()[0])

    def keep_predictions(self, predictions: Sequence[KeptPrediction]) -> None:
        if not predictions:
            return
        rows = [(*_prediction_row(p), p.model) for p in predictions]
        with self._write() as cursor:
            cursor.executemany(
                self._sql(
                    "INSERT INTO predictions (id, model_version, backbone_id, labels, "
                    "probabilities, features, pixels, pixels_shape, least_confidence, margin, "
                    "entropy, created_at, content_id, shadow_version, shadow_label, model) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO NOTHING"
                ),
                rows,
            )

    def prediction(self, prediction_id: str) -> KeptPrediction | None:
        with self._read() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {_PREDICTION_COLUMNS} FROM predictions WHERE id = ? AND model = ?"
                ),
                (prediction_id, self.model),
            )
            row = cursor.fetchone()
        return _prediction_from_row(row) if row else None

    def prune_predictions(self, *, max_count: int, older_than: float) -> int:
        with self._write() as cursor:
            cursor.execute(self._sql("DELETE FROM predictions WHERE created_at < ?"), (older_than,))
            removed = int(cursor.rowcount or 0)
            cursor.execute(
                self._sql(
                    "DELETE FROM predictions WHERE id IN (SELECT id FROM predictions "
                    f"ORDER BY created_at DESC {self.skip_first} ?)"
                ),
                (max_count,),
            )
            removed += int(cursor.rowcount or 0)
        return removed

    def unlabeled_predictions(
        self,
        strategy: SuggestStrategy,
        limit: int,
        model_version: str | None = None,
        *,
        with_pixels: bool = True,
    ) -> list[KeptPrediction]:
        # A column name in the query below: only an enum member may get there. `balanced`
        # scores above the store, over the most recent candidates.
        strategy = SuggestStrategy(strategy)
        order = "created_at" if strategy == SuggestStrategy.BALANCED else strategy
        version_filter = "AND p.model_version = ? " if model_version else ""
        columns = _PREDICTION_COLUMNS if with_pixels else _PREDICTION_COLUMNS_NO_PIXELS
        with self._read() as cursor:
            self._hash_anti_joins(cursor)
            cursor.execute(
                self._sql(
                    f"SELECT {columns} FROM predictions p WHERE p.model = ? AND NOT EXISTS "
                    "(SELECT 1 FROM labels l WHERE l.prediction_id = p.id) AND NOT EXISTS "
                    "(SELECT 1 FROM labels l WHERE l.content_id = p.content_id "
                    f"AND l.model = p.model) {version_filter}"
                    f"ORDER BY {order} DESC, created_at DESC LIMIT ?"
                ),
                (self.model, model_version, limit) if model_version else (self.model, limit),
            )
            rows = cursor.fetchall()
        return [_prediction_from_row(row) for row in rows]

    def _hash_anti_joins(self, cursor: Cursor) -> None:
        """Make the rest of this read transaction's anti-joins hash (or merge) joins, where
        the dialect's planner might otherwise choose a nested loop over a scan."""

    def current_labels(
        self,
        since_seq: int = 0,
        *,
        principals: Sequence[str] = (),
        exclude_principals: Sequence[str] = (),
    ) -> list[LabelRecord]:
        agreed, query_params = self._agreed_sql(*self._labels_by(principals, exclude_principals))
        with self._read() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {_LABEL_COLUMNS} FROM labels l JOIN ({agreed}) agreed "
                    "ON agreed.seq = l.seq WHERE l.seq > ? ORDER BY l.seq"
                ),
                (*query_params, since_seq),
            )
            rows = cursor.fetchall()
        return [_label_record(row) for row in rows]

    def _labels_by(
        self, principals: Sequence[str], exclude_principals: Sequence[str]
    ) -> tuple[str, tuple[Any, ...]]:
        """A WHERE clause and its parameters: this model's labels, by `principals` (all if
        empty) and not by `exclude_principals`."""
        conditions, params = ["model = ?"], [self.model]
        if principals:
            conditions.append(f"principal IN ({', '.join('?' * len(principals))})")
            params.extend(principals)
        if exclude_principals:
            conditions.append(f"principal NOT IN ({', '.join('?' * len(exclude_principals))})")
            params.extend(exclude_principals)
        return f"WHERE {' AND '.join(conditions)} ", tuple(params)

    def label_history(self, sample_id: str) -> list[LabelRecord]:
        with self._read() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {_LABEL_COLUMNS} FROM labels l WHERE sample_id = ? AND model = ? "
                    "ORDER BY seq"
                ),
                (sample_id, self.model),
            )
            rows = cursor.fetchall()
        return [_label_record(row) for row in rows]

    def approve_labels(self, labels: Sequence[str], principal: str) -> None:
        with self._write() as cursor:
            cursor.executemany(
                self._sql(
                    "INSERT INTO approved_labels (model, label, approved_by, approved_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (model, label) DO NOTHING"
                ),
                [(self.model, label, principal, time.time()) for label in labels],
            )

    def approved_labels(self) -> set[str]:
        with self._read() as cursor:
            cursor.execute(
                self._sql("SELECT label FROM approved_labels WHERE model = ?"), (self.model,)
            )
            return {row[0] for row in cursor.fetchall()}

    def last_label_seq(self) -> int:
        with self._read() as cursor:
            cursor.execute(
                self._sql("SELECT COALESCE(MAX(seq), 0) FROM labels WHERE model = ?"),
                (self.model,),
            )
            return int(cursor.fetchone()[0])

    def labels_added_since(self, created_at: float) -> int:
        agreed, params = self._agreed_sql(*self._labels_by((), ()))
        with self._read() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT COUNT(*) FROM labels l JOIN ({agreed}) agreed "
                    "ON agreed.seq = l.seq WHERE l.created_at >= ?"
                ),
                (*params, created_at),
            )
            return int(cursor.fetchone()[0])

    def labels_since(self, seq: int) -> int:
        with self._read() as cursor:
            cursor.execute(
                self._sql("SELECT COUNT(*) FROM labels WHERE model = ? AND seq > ?"),
                (self.model, seq),
            )
            return int(cursor.fetchone()[0])

    def request_training(self, reason: str) -> int:
        with self._write() as cursor:
            self._lock_training_requests(cursor)
            cursor.execute(
                self._sql(
                    "SELECT MIN(id) FROM training_requests WHERE model = ? AND handled_at IS NULL"
                ),
                (self.model,),
            )
            pending = cursor.fetchone()[0]
            if pending is not None:
                return int(pending)
            cursor.execute(
                self._sql(
                    "INSERT INTO training_requests (model, reason, requested_at) "
                    "VALUES (?, ?, ?) RETURNING id"
                ),
                (self.model, reason, time.time()),
            )
            return int(cursor.fetchone()[0])

    def pending_training_requests(self) -> list[tuple[int, str]]:
        with self._read() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT id, reason FROM training_requests "
                    "WHERE model = ? AND handled_at IS NULL ORDER BY id"
                ),
                (self.model,),
            )
            return [(int(row[0]), row[1]) for row in cursor.fetchall()]

    def mark_training_requests(self, ids: Sequence[int], run_id: str) -> None:
        if not ids:
            return
        with self._write() as cursor:
            cursor.executemany(
                self._sql("UPDATE training_requests SET handled_at = ?, run_id = ? WHERE id = ?"),
                [(time.time(), run_id, request_id) for request_id in ids],
            )

    def images(self, sample_ids: Iterable[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with self._read() as cursor:
            for chunk in _chunks(list(sample_ids), 500):
                marks = ", ".join("?" * len(chunk))
                cursor.execute(
                    self._sql(f"SELECT id, image FROM samples WHERE id IN ({marks})"), chunk
                )
                found.update((row[0], bytes(row[1])) for row in cursor.fetchall())
        return found

    def features(self, backbone_id: str, sample_ids: Iterable[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._read() as cursor:
            for chunk in _chunks(list(sample_ids), 500):
                marks = ", ".join("?" * len(chunk))
                cursor.execute(
                    self._sql(
                        "SELECT sample_id, vector FROM features "
                        f"WHERE backbone_id = ? AND sample_id IN ({marks})"
                    ),
                    [backbone_id, *chunk],
                )
                found.update(
                    (row[0], np.frombuffer(bytes(row[1]), dtype="<f4")) for row in cursor.fetchall()
                )
        return found

    def put_features(self, backbone_id: str, vectors: Mapping[str, np.ndarray]) -> None:
        if not vectors:
            return
        with self._write() as cursor:
            cursor.executemany(
                self._sql(
                    "INSERT INTO features (sample_id, backbone_id, vector) VALUES (?, ?, ?) "
                    "ON CONFLICT (sample_id, backbone_id) DO UPDATE SET vector = excluded.vector"
                ),
                [(sample, backbone_id, _vector(vector)) for sample, vector in vectors.items()],
            )

    def put_trainer_status(self, status: Mapping[str, Any]) -> None:
        with self._write() as cursor:
            cursor.execute(
                self._sql(
                    "INSERT INTO trainer_status (model, document, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (model) DO UPDATE SET document = excluded.document, "
                    "updated_at = excluded.updated_at"
                ),
                (self.model, json.dumps(dict(status)), time.time()),
            )

    def trainer_status(self) -> tuple[dict[str, Any], float] | None:
        with self._read() as cursor:
            cursor.execute(
                self._sql("SELECT document, updated_at FROM trainer_status WHERE model = ?"),
                (self.model,),
            )
            row = cursor.fetchone()
        return (json.loads(row[0]), float(row[1])) if row else None

    def live_accuracy(self, model_version: str) -> tuple[int, int]:
        with self._read() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT COALESCE(SUM(CASE WHEN l.label = l.predicted_label THEN 1 ELSE 0 "
                    "END), 0), COUNT(*) FROM labels l WHERE l.model_version = ? AND NOT EXISTS "
                    "(SELECT 1 FROM labels later WHERE later.sample_id = l.sample_id AND "
                    "later.model = l.model AND later.seq > l.seq AND "
                    "(later.prediction_id = l.prediction_id OR "
                    "later.label = ?))"
                ),
                (model_version, RETRACTED),
            )
            correct, total = cursor.fetchone()
        return int(correct), int(total)

    def experiment_pairs(self, champion: str, challenger: str) -> list[tuple[bool, bool]]:
        """(champion right, challenger right) per labeled prediction both scored, in label
        order; a prediction labeled again counts once, by its newest label, and a retracted
        one not at all (as in live accuracy)."""
        with self._read() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT l.label, l.model_version, l.predicted_label, l.shadow_label "
                    "FROM labels l WHERE l.model = ? AND l.prediction_id IS NOT NULL AND "
                    "((l.model_version = ? AND l.shadow_version = ?) OR "
                    "(l.model_version = ? AND l.shadow_version = ?)) AND l.label <> ? AND "
                    "NOT EXISTS (SELECT 1 FROM labels later WHERE later.sample_id = l.sample_id "
                    "AND later.model = l.model AND later.seq > l.seq AND "
                    "(later.prediction_id = l.prediction_id OR later.label = ?)) ORDER BY l.seq"
                ),
                (self.model, champion, challenger, challenger, champion, RETRACTED, RETRACTED),
            )
            rows = cursor.fetchall()
        pairs = []
        for label, answered_by, answer, shadow_answer in rows:
            champion_answer, challenger_answer = (
                (answer, shadow_answer) if answered_by == champion else (shadow_answer, answer)
            )
            pairs.append((champion_answer == label, challenger_answer == label))
        return pairs


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
