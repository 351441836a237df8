"""Real transfer learning through the real loop: a ConvNet pretrained on MNIST digits 0-9,
frozen, taught odd vs even by feedback over gRPC, trained by the trainer loop,
published to the registry and hot-swapped by the server; measured through Predict on
1,000 held-out digits that were never labeled."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from clients import TlserveClient
from server.registry import Registry
from server.store.sqlite import SqliteFeedbackStore
from tests.support import ServerThread
from trainer.loop import TrainerLoop
from trainer.metrics import TrainerMetrics
from trainer.mnist import load_digits, split_halves
from trainer.pretrain import CUT_LAYER, pretrain_digits
from trainer.settings import TrainerSettings

SEED_LABELS = 10
ROUND_LABELS = 30
ROUNDS = 3


def png(digit: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(digit, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def parity(digit_label: int) -> str:
    return "odd" if digit_label % 2 else "even"


class Loop:
    """The trainer loop in a thread, on the server's data dir (its own store connection)."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.store = SqliteFeedbackStore(settings.data_dir / "feedback.sqlite3")
        self.metrics = CollectorRegistry()
        self.loop = TrainerLoop(
            settings, self.store, Registry(settings.registry_path), TrainerMetrics(self.metrics)
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, args=(self.stop,))

    def __enter__(self) -> TrainerLoop:
        self.thread.start()
        return self.loop

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(300)
        self.store.close()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("pretrained") / "mnist_convnet.keras"
    report = pretrain_digits(target)
    assert report["source_validation_accuracy"] > 0.9
    return target


@pytest.fixture
def system(tmp_path: Path, pretrained: Path) -> Iterator[tuple[ServerThread, TrainerLoop]]:
    server = ServerThread(
        tmp_path, keep_max_per_second=0.0, prediction_retention_count=100_000
    ).start()
    settings = TrainerSettings(
        data_dir=tmp_path,
        backbone=str(pretrained),
        backbone_cut_layer=CUT_LAYER,
        backbone_weights="none",
        min_new_labels=SEED_LABELS,
        poll_seconds=0.2,
        # Holdouts of a few dozen deliberately hard (suggested) samples are too noisy to
        # gate on regression; tests/test_gate.py covers the gate.
        max_regression=1.0,
        metrics_port=None,
    )
    try:
        with Loop(settings) as loop:
            yield server, loop
    finally:
        server.stop()


def wait_for_model_covering(client: TlserveClient, labeled: int, timeout: float = 240) -> str:
    """The served version trained on all `labeled` labels (earlier runs may have seen fewer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            model = client.get_model()
        except Exception:
            time.sleep(0.3)
            continue
        dataset = model.card.get("dataset", {})
        if dataset.get("train", 0) + dataset.get("holdout", 0) >= labeled:
            return model.version
        time.sleep(0.3)
    raise AssertionError(f"no version trained on {labeled} labels within {timeout}s")


def accuracy(
    client: TlserveClient, images: list[bytes], truth: list[str]
) -> tuple[float, list[str]]:
    predicted: list[str] = []
    for start in range(0, len(images), 200):
        result = client.predict(images[start : start + 200], top_k=1, keep=False)
        predicted += [p.label for p in result.predictions]
    return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)])), predicted


@pytest.mark.timeout(900)
def test_odd_even_from_100_suggested_labels(system: tuple[ServerThread, TrainerLoop]) -> None:
    server, loop = system
    images, labels = load_digits()
    _, target = split_halves(labels)
    order = np.random.default_rng(42).permutation(target)
    evaluation, pool = order[:1000], order[1000:]
    eval_images = [png(images[i]) for i in evaluation]
    eval_truth = [parity(labels[i]) for i in evaluation]
    labeled: set[int] = set()

    with TlserveClient(server.target, timeout=60) as client:
        for i in pool[:SEED_LABELS]:  # a random seed set: suggestions need a first model
            client.submit_feedback(parity(labels[i]), image=png(images[i]), source="seed")
            labeled.add(int(i))
        first = wait_for_model_covering(client, len(labeled))
        first_accuracy, first_predictions = accuracy(client, eval_images, eval_truth)

        for _ in range(ROUNDS):
            unlabeled = [int(i) for i in pool if int(i) not in labeled]
            by_id: dict[str, int] = {}
            for start in range(0, len(unlabeled), 200):
                chunk = unlabeled[start : start + 200]
                result = client.predict([png(images[i]) for i in chunk], top_k=1)
                by_id.update(
                    (p.prediction_id, i) for p, i in zip(result.predictions, chunk, strict=True)
                )
            suggestions = client.suggest_labels(ROUND_LABELS, "entropy", images=False)
            assert len(suggestions) == ROUND_LABELS
            for suggestion in suggestions:
                digit = by_id[suggestion.prediction_id]
                client.submit_feedback(
                    parity(labels[digit]), prediction_id=suggestion.prediction_id, source="test"
                )
                labeled.add(digit)
            wait_for_model_covering(client, len(labeled))

        final_accuracy, final_predictions = accuracy(client, eval_images, eval_truth)
        final = client.get_model()

    assert len(labeled) <= 100
    assert not labeled & {int(i) for i in evaluation}
    assert final.version != first
    print(
        f"\nodd/even on 1000 never-labeled digits: {first_accuracy:.3f} after {SEED_LABELS} "
        f"random labels, {final_accuracy:.3f} after {len(labeled)} ({final.version})"
    )
    assert final_accuracy >= 0.95
    # Feedback changed predictions: some digits the first version got wrong are now right.
    fixed = sum(
        f != t and n == t
        for f, n, t in zip(first_predictions, final_predictions, eval_truth, strict=True)
    )
    assert fixed > 0 and final_accuracy > first_accuracy
    assert loop.metrics is not None
    value = loop.metrics.registry.get_sample_value
    assert (value("tlserve_trainer_runs_total", {"result": "promoted"}) or 0) >= ROUNDS + 1
    assert (value("tlserve_trainer_holdout_accuracy") or 0) > 0
    assert (value("tlserve_trainer_feedback_to_publish_seconds_count") or 0) >= ROUNDS + 1
    assert (value("tlserve_trainer_stage_seconds_count", {"stage": "train"}) or 0) >= ROUNDS + 1
