"""One test suite, two stores: SQLite (a real file) and PostgreSQL (this machine's server)."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from tests.support import postgres_or_skip
from tlserve.server.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tlserve.server.keeper import PredictionKeeper
from tlserve.server.metrics import ServerMetrics
from tlserve.server.store.base import FeedbackStore, KeptPrediction, sample_id_of
from tlserve.server.store.labels import in_holdout, normalize_label
from tlserve.server.store.postgres import PostgresFeedbackStore
from tlserve.server.store.sql import MIGRATIONS
from tlserve.server.store.sqlite import SqliteFeedbackStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeedbackStore]:
    if request.param == "sqlite":
        opened: FeedbackStore = SqliteFeedbackStore(tmp_path / "feedback.sqlite3")
        yield opened
        opened.close()
        return
    dsn = postgres_or_skip()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    opened = PostgresFeedbackStore(dsn, schema=schema, max_size=16)
    try:
        yield opened
    finally:
        opened.close()
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


def prediction(
    pid: str, probabilities: list[float], version: str = "v1", seed: int = 0
) -> KeptPrediction:
    rng = np.random.default_rng(seed)
    return KeptPrediction(
        prediction_id=pid,
        model_version=version,
        backbone_id="b" * 64,
        labels=("cat", "dog", "eel")[: len(probabilities)],
        probabilities=np.array(probabilities, dtype=np.float32),
        features=rng.normal(size=8).astype(np.float32),
        pixels=rng.integers(0, 255, (6, 5, 3), dtype=np.uint8),
        created_at=time.time(),
    )


def test_content_addressed_samples_and_latest_label_wins(store: FeedbackStore) -> None:
    first = store.add_label(principal="test", image=b"image-a", label="cat", source="alice")
    assert first.sample_id == sample_id_of(b"image-a") and first.previous_label is None
    second = store.add_label(principal="test", image=b"image-a", label="dog", source="bob")
    assert second.sample_id == first.sample_id and second.previous_label == "cat"
    store.add_label(principal="test", image=b"image-b", label="cat", source="alice")
    current = {r.sample_id: r.label for r in store.current_labels()}
    assert current == {sample_id_of(b"image-a"): "dog", sample_id_of(b"image-b"): "cat"}
    history = store.label_history(first.sample_id)
    assert [(r.label, r.source) for r in history] == [("cat", "alice"), ("dog", "bob")]
    assert store.images([first.sample_id]) == {first.sample_id: b"image-a"}


def test_cursor_returns_only_samples_labeled_since(store: FeedbackStore) -> None:
    store.add_label(principal="test", image=b"a", label="cat", source="s")
    cursor = store.last_label_seq()
    store.add_label(principal="test", image=b"b", label="dog", source="s")
    store.add_label(principal="test", image=b"a", label="eel", source="s")
    assert sorted(r.label for r in store.current_labels(since_seq=cursor)) == ["dog", "eel"]
    assert store.current_labels(since_seq=store.last_label_seq()) == []


def test_idempotency_key(store: FeedbackStore) -> None:
    first = store.add_label(
        principal="test", image=b"a", label="cat", source="s", idempotency_key="k1"
    )
    again = store.add_label(
        principal="test", image=b"a", label="cat", source="s", idempotency_key="k1"
    )
    assert again.duplicate and again.sample_id == first.sample_id and again.label == "cat"
    assert len(store.label_history(first.sample_id)) == 1
    with pytest.raises(AlreadyExists, match="k1"):
        store.add_label(principal="test", image=b"a", label="dog", source="s", idempotency_key="k1")
    with pytest.raises(AlreadyExists):
        store.add_label(
            principal="test", image=b"other", label="cat", source="s", idempotency_key="k1"
        )
    assert [r.label for r in store.label_history(first.sample_id)] == ["cat"]


def test_kept_predictions_round_trip_and_prune(store: FeedbackStore) -> None:
    kept = [prediction(f"p{i}", [0.5, 0.3, 0.2], seed=i) for i in range(5)]
    store.keep_predictions(kept)
    loaded = store.prediction("p3")
    assert loaded is not None
    assert np.array_equal(loaded.pixels, kept[3].pixels)
    assert np.array_equal(loaded.features, kept[3].features)
    assert loaded.labels == ("cat", "dog", "eel") and loaded.top_label == "cat"
    assert store.prediction("missing") is None
    assert store.prune_predictions(max_count=3, older_than=0) == 2
    assert store.prediction("p0") is None and store.prediction("p4") is not None
    assert store.prune_predictions(max_count=100, older_than=time.time() + 1) == 3


def test_feedback_on_predictions_gives_live_accuracy_and_features(store: FeedbackStore) -> None:
    right, wrong = prediction("p1", [0.9, 0.1]), prediction("p2", [0.8, 0.2], seed=1)
    store.keep_predictions([right, wrong])
    stored = store.add_label(
        principal="test", image=b"img1", label="cat", source="s", prediction=right
    )
    store.add_label(principal="test", image=b"img2", label="dog", source="s", prediction=wrong)
    assert store.live_accuracy("v1") == (1, 2)
    assert store.live_accuracy("v2") == (0, 0)
    cached = store.features("b" * 64, [stored.sample_id])
    assert np.array_equal(cached[stored.sample_id], right.features)


def test_unlabeled_predictions_by_uncertainty(store: FeedbackStore) -> None:
    store.keep_predictions(
        [
            prediction("sure", [0.98, 0.01, 0.01]),
            prediction("split", [0.45, 0.45, 0.10], seed=1),
            prediction("flat", [0.34, 0.33, 0.33], seed=2),
            prediction("labeled", [0.34, 0.33, 0.33], seed=3),
        ]
    )
    labeled = store.prediction("labeled")
    assert labeled is not None
    store.add_label(principal="test", image=b"x", label="cat", source="s", prediction=labeled)
    by_entropy = [p.prediction_id for p in store.unlabeled_predictions("entropy", 10)]
    assert by_entropy == ["flat", "split", "sure"]
    by_margin = [p.prediction_id for p in store.unlabeled_predictions("margin", 2)]
    assert by_margin == ["split", "flat"]
    with pytest.raises(ValueError, match="'chaos' is not a valid SuggestStrategy"):
        store.unlabeled_predictions("chaos", 1)  # type: ignore[arg-type]


def test_unlabeled_predictions_page_past_labeled_ones(store: FeedbackStore) -> None:
    """The most uncertain 150 of 200 kept predictions are labeled, 100 by their prediction
    id and 50 by an image of the same content: the next 20 come from past the first pages,
    in order, none labeled and none twice."""
    kept = [
        prediction(f"p{i:03d}", [0.34 + i / 1000, 0.33, 0.33 - i / 1000], seed=i)
        for i in range(200)
    ]
    store.keep_predictions(kept)
    for item in kept[:100]:
        store.add_label(
            principal="t",
            image=item.prediction_id.encode(),
            label="cat",
            source="s",
            prediction=item,
        )
    for item in kept[100:150]:
        store.add_label(
            principal="t",
            image=item.pixels.tobytes(),
            label="cat",
            source="s",
            content_id=item.content,
        )
    chosen = [p.prediction_id for p in store.unlabeled_predictions("margin", 20)]
    assert chosen == [f"p{i:03d}" for i in range(150, 170)]
    everything = store.unlabeled_predictions("least_confidence", 1000, with_pixels=False)
    assert sorted(p.prediction_id for p in everything) == [f"p{i:03d}" for i in range(150, 200)]


def test_features_cache(store: FeedbackStore) -> None:
    vectors = {f"s{i}": np.full(4, i, dtype=np.float32) for i in range(3)}
    store.put_features("bb", vectors)
    got = store.features("bb", ["s0", "s2", "missing"])
    assert sorted(got) == ["s0", "s2"] and got["s2"].tolist() == [2, 2, 2, 2]
    assert store.features("other", ["s0"]) == {}
    store.put_features("bb", {"s0": np.ones(4, dtype=np.float32)})
    assert store.features("bb", ["s0"])["s0"].tolist() == [1, 1, 1, 1]


def test_label_counts_with_stable_holdout(store: FeedbackStore) -> None:
    for i in range(40):
        store.add_label(
            principal="test", image=f"img{i}".encode(), label="odd" if i % 2 else "even", source="s"
        )
    counts = store.label_counts(holdout_percent=25)
    assert {label: n for label, (n, _, _) in counts.items()} == {"even": 20, "odd": 20}
    expected_holdout = sum(in_holdout(sample_id_of(f"img{i}".encode()), 25) for i in range(40))
    assert sum(h for _, h, _ in counts.values()) == expected_holdout
    assert {labelers for _, _, labelers in counts.values()} == {1}, "one principal gave them"


def test_concurrent_writers_and_a_reader_lose_nothing(store: FeedbackStore) -> None:
    writers, per_writer = 8, 25
    errors: list[BaseException] = []
    done = threading.Event()

    def write(worker: int) -> None:
        try:
            for i in range(per_writer):
                store.add_label(
                    principal="test",
                    image=f"w{worker}-{i}".encode(),
                    label=f"class{i % 3}",
                    source=f"w{worker}",
                    idempotency_key=f"w{worker}-{i}",
                )
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        while not done.is_set():
            try:
                store.current_labels()
            except BaseException as exc:
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    reader.join(30)
    assert errors == []
    assert len(store.current_labels()) == writers * per_writer


def test_migrations_are_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    SqliteFeedbackStore(path).close()
    reopened = SqliteFeedbackStore(path)
    assert reopened.migrate() == len(MIGRATIONS) == 7
    assert reopened.integrity_check() == "ok"
    reopened.close()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("   \t", "only whitespace"),
        ("x" * 129, "129 characters long; at most 128"),
        ("cat\x00", "category Cc"),
        ("cat\u202edog", "category Cf"),
        ("ca\u200bt", "ZERO WIDTH SPACE"),
        ("line\u2028break", "category Zl"),
    ],
)
def test_bad_labels(raw: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        normalize_label(raw)


def test_labels_are_nfc_normalised_and_trimmed() -> None:
    assert normalize_label("  cafe\u0301 ") == "caf\u00e9"
    assert normalize_label("x" * 128) == "x" * 128
    assert normalize_label("日本") == "日本"


def test_concurrent_submissions_of_one_idempotency_key(store: FeedbackStore) -> None:
    """8 writers submit the same 40 keyed labels at once: each key stores exactly once and
    every other submission is answered as its duplicate (PostgreSQL raised UniqueViolation)."""
    keys = [f"key-{i}" for i in range(40)]

    def submit_all(worker: int) -> list[bool]:
        return [
            store.add_label(
                principal="test",
                image=f"image {key}".encode(),
                label="cat",
                source=f"w{worker}",
                idempotency_key=key,
            ).duplicate
            for key in keys
        ]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(submit_all, range(8)))
    for index in range(len(keys)):
        assert sorted(outcome[index] for outcome in outcomes) == [False] + [True] * 7
    assert store.label_counts(0.0) == {"cat": (40, 0, 1)}


async def test_the_keeper_drops_rows_the_store_refuses_and_keeps_going(
    store: FeedbackStore,
) -> None:
    """A row the store cannot take (a version id holding a lone surrogate, which neither
    driver can encode) must not jam the keeper: on both stores it is dropped and counted,
    and the good rows around it are stored."""
    metrics = ServerMetrics(CollectorRegistry())
    keeper = PredictionKeeper(store, metrics, retention_count=100, retention_seconds=3600.0)
    poisoned = prediction("poisoned", [0.5, 0.5], version="v\ud800")
    keeper.keep([prediction("good-1", [0.7, 0.3]), poisoned])
    await keeper.flush()
    keeper.keep([prediction("good-2", [0.6, 0.4])])
    await keeper.flush()
    assert store.prediction("good-1") is not None and store.prediction("good-2") is not None
    assert store.prediction("poisoned") is None
    dropped = metrics.registry.get_sample_value(
        "tlserve_kept_predictions_dropped_total", {"reason": "unstorable"}
    )
    assert dropped == 1


def test_a_retracted_label_leaves_training_and_live_accuracy(store: FeedbackStore) -> None:
    keep = prediction("p1", [0.9, 0.1])
    store.keep_predictions([keep])
    labeled = store.add_label(
        principal="token:ann", image=b"image-a", label="cat", source="page", prediction=keep
    )
    store.add_label(principal="token:bob", image=b"image-b", label="dog", source="page")
    assert store.live_accuracy("v1") == (1, 1)
    seq = store.last_label_seq()

    assert store.retract_label(labeled.sample_id, "token:ann") == "cat"

    assert [r.label for r in store.current_labels()] == ["dog"]
    assert store.live_accuracy("v1") == (0, 0)
    assert store.labels_since(seq) == 1  # the trainer's cursor sees the change
    assert [r.label for r in store.label_history(labeled.sample_id)] == ["cat", ""]
    # Labeled again after the undo: it counts again, once.
    again = store.add_label(
        principal="token:ann", image=b"image-a", label="dog", source="page", prediction=keep
    )
    assert again.previous_label is None
    assert store.live_accuracy("v1") == (0, 1)


def test_only_a_current_label_can_be_retracted(store: FeedbackStore) -> None:
    with pytest.raises(NotFound, match="no label"):
        store.retract_label(sample_id_of(b"never"), "token:ann")
    sample = store.add_label(principal="token:ann", image=b"a", label="cat", source="").sample_id
    with pytest.raises(PermissionDenied, match="token:ann"):
        store.retract_label(sample, "token:bob")
    assert store.retract_label(sample, "token:bob", any_principal=True) == "cat"
    with pytest.raises(NotFound, match="retracted already"):
        store.retract_label(sample, "token:ann")


def test_relabeling_counts_once_in_live_accuracy(store: FeedbackStore) -> None:
    keep = prediction("p1", [0.9, 0.1])
    store.keep_predictions([keep])
    for label in ("dog", "cat"):
        store.add_label(principal="t", image=b"a", label=label, source="", prediction=keep)
    assert store.live_accuracy("v1") == (1, 1)


def test_labels_added_since_a_time(store: FeedbackStore) -> None:
    store.add_label(principal="t", image=b"a", label="cat", source="")
    midnight = time.time()
    store.add_label(principal="t", image=b"b", label="dog", source="")
    retracted = store.add_label(principal="t", image=b"c", label="dog", source="")
    store.retract_label(retracted.sample_id, "t")
    assert store.labels_added_since(0) == 2
    assert store.labels_added_since(midnight) == 1
    assert store.labels_added_since(time.time() + 60) == 0


def test_closing_waits_for_calls_in_other_threads_and_refuses_later_ones(
    store: FeedbackStore,
) -> None:
    """A server's stop closes the store while a cancelled task's worker thread may still be
    writing kept predictions: SQLite crashed the process (a connection closed under a
    running statement). Close must wait for such calls; later ones get Unavailable."""
    outcomes: list[str] = []
    started = threading.Event()

    def writer(worker: int) -> None:
        for n in range(100_000):
            try:
                store.keep_predictions(
                    [prediction(f"{worker}-{n}-{i}", [0.5, 0.5], seed=i) for i in range(20)]
                )
            except Unavailable as exc:
                outcomes.append(str(exc))
                return
            except Exception as exc:
                outcomes.append(f"unexpected {exc!r}")
                return
            started.set()
        outcomes.append("never refused")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    assert started.wait(30)
    store.close()
    for thread in threads:
        thread.join(30)
    assert len(outcomes) == 4
    assert all("closed" in outcome for outcome in outcomes), outcomes


def test_experiment_pairs_are_labeled_predictions_both_versions_scored(
    store: FeedbackStore,
) -> None:
    def scored(
        pid: str, answered_by: str, shadow_by: str, shadow_label: str, seed: int
    ) -> KeptPrediction:
        return dataclasses.replace(
            prediction(pid, [0.8, 0.1, 0.1], answered_by, seed),  # answers "cat"
            shadow_version=shadow_by,
            shadow_label=shadow_label,
        )

    kept = [
        scored("p1", "champ", "chall", "dog", 1),  # labeled cat: champion right only
        scored("p2", "chall", "champ", "dog", 2),  # answered by the challenger: cat; labeled cat
        scored("p3", "champ", "chall", "cat", 3),  # retracted: no pair
        scored("p4", "champ", "other", "dog", 4),  # another experiment's pair
        prediction("p5", [0.8, 0.1, 0.1], "champ", 5),  # not scored beside: no pair
    ]
    store.keep_predictions(kept)
    for n, p in enumerate(kept):
        stored = store.prediction(p.prediction_id)
        assert stored is not None and stored.shadow_version == p.shadow_version
        store.add_label(image=bytes([n]), label="cat", source="", principal="t", prediction=stored)
    store.retract_label(sample_id_of(bytes([2])), "t")
    # p2 was the challenger's answer (cat, right) and the champion's shadow answer (dog).
    assert store.experiment_pairs("champ", "chall") == [(True, False), (False, True)]
    assert store.experiment_pairs("champ", "nobody") == []
