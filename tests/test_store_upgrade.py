"""A feedback store written by the release before named models, upgraded in place by
this one, on SQLite and PostgreSQL: nothing lost, its data is the default model's, named
models start empty, a second upgrade changes nothing, and a store newer than the code is
refused at start."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.support import postgres_or_skip, previous_release, run_previous_release
from tlserve.server.errors import StoreTooNew
from tlserve.server.store import open_store
from tlserve.server.store.base import FeedbackStore
from tlserve.server.store.postgres import PostgresFeedbackStore
from tlserve.server.store.sql import MIGRATIONS

WRITE_WITH_THE_PREVIOUS_RELEASE = """
import io, json, sys, time
import numpy as np
from PIL import Image
from tlserve.server.store import open_store
from tlserve.server.store.base import KeptPrediction
from tlserve.server.store.postgres import PostgresFeedbackStore

url, *schema = sys.argv[1:]
store = PostgresFeedbackStore(url, schema=schema[0]) if schema else open_store(url)
def png(colour):
    buffer = io.BytesIO(); Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()
store.add_label(image=png((255, 0, 0)), label="red", source="t", principal="alice",
                idempotency_key="k-red")
store.add_label(image=png((0, 0, 255)), label="blue", source="t", principal="bob")
store.keep_predictions([KeptPrediction(
    prediction_id="p1", model_version="v1", backbone_id="b" * 64, labels=("red", "blue"),
    probabilities=np.array([0.9, 0.1], np.float32), features=np.ones(3, np.float32),
    pixels=np.zeros((4, 4, 3), np.uint8), created_at=time.time())])
store.approve_labels(["blue"], "admin")
request = store.request_training("before the upgrade")
store.put_trainer_status({"state": "idle", "detail": "waiting"})
print(json.dumps({"request": request, "seq": store.last_label_seq()}))
store.close()
"""


def _url(store: str, tmp_path: Path) -> tuple[str, list[str]]:
    if store == "sqlite":
        url = f"sqlite:///{tmp_path / 'feedback.sqlite3'}"
        return url, [url]
    dsn = postgres_or_skip()
    schema = f"upgrade_{uuid.uuid4().hex[:10]}"
    return dsn, [dsn, schema]


def _open(store: str, args: list[str]) -> FeedbackStore:
    return (
        PostgresFeedbackStore(args[0], schema=args[1])
        if store == "postgres"
        else open_store(args[0])
    )


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_store_of_the_previous_release_is_upgraded_in_place(tmp_path: Path, store: str) -> None:
    code = previous_release(tmp_path)
    _, args = _url(store, tmp_path)
    written = json.loads(run_previous_release(code, WRITE_WITH_THE_PREVIOUS_RELEASE, *args))

    upgraded = _open(store, args)
    try:
        assert upgraded.migrate() == len(MIGRATIONS)  # already applied at open: a no-op
        labels = {record.label for record in upgraded.current_labels()}
        assert labels == {"red", "blue"}
        assert upgraded.last_label_seq() == written["seq"]
        assert upgraded.prediction("p1") is not None
        assert upgraded.approved_labels() == {"blue"}
        assert upgraded.pending_training_requests() == [(written["request"], "before the upgrade")]
        status = upgraded.trainer_status()
        assert status is not None and status[0]["detail"] == "waiting"
        # The idempotency key still promises what it promised.
        again = upgraded.add_label(
            image=_png((255, 0, 0)),
            label="red",
            source="t",
            principal="alice",
            idempotency_key="k-red",
        )
        assert again.duplicate
        # A named model starts with nothing of the default model's.
        named = upgraded.for_model("digits")
        assert named.current_labels() == [] and named.prediction("p1") is None
        assert named.approved_labels() == set() and named.trainer_status() is None
        assert named.pending_training_requests() == []
        asked = named.request_training("for digits")
        assert named.pending_training_requests() == [(asked, "for digits")]
        assert len(upgraded.pending_training_requests()) == 1
        named.add_label(image=_png((255, 0, 0)), label="seven", source="t", principal="alice")
        assert {r.label for r in named.current_labels()} == {"seven"}
        assert {r.label for r in upgraded.current_labels()} == {"red", "blue"}
    finally:
        upgraded.close()


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_store_newer_than_the_code_is_refused(tmp_path: Path, store: str) -> None:
    _, args = _url(store, tmp_path)
    current = _open(store, args)
    with current._write() as cursor:
        cursor.execute(
            current._sql("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)"),
            (len(MIGRATIONS) + 1, 0.0),
        )
    current.close()
    with pytest.raises(StoreTooNew, match="newer tlserve"):
        _open(store, args)


def _png(colour: tuple[int, int, int]) -> bytes:
    import io  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()
