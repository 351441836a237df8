"""Real transfer learning through the real loop: a ConvNet pretrained on MNIST digits 0-9,
frozen, taught odd vs even by feedback over gRPC, trained by the trainer loop,
published to the registry and hot-swapped by the server; measured through Predict on
1,000 held-out digits that were never labeled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from examples.odd_even import Task, label_rounds, parity
from tests.support import ServerThread
from tests.training import Loop, on_pretrained
from tlserve.clients import TlserveClient

pytestmark = pytest.mark.slow  # TensorFlow: the whole learning loop

ROUNDS = 3


@pytest.fixture
def system(tmp_path: Path, pretrained: Path) -> Iterator[tuple[ServerThread, Loop]]:
    server = ServerThread(
        tmp_path, keep_max_per_second=0.0, prediction_retention_count=100_000
    ).start()
    # Otherwise the defaults, the promotion gate's included.
    settings = on_pretrained(
        tmp_path,
        pretrained,
        min_new_labels=10,
        # Labels that arrive while a run trains are picked up by the timer.
        train_every_seconds=2.0,
        poll_seconds=0.2,
    )
    try:
        with Loop(settings) as loop:
            yield server, loop
    finally:
        server.stop()


@pytest.mark.timeout(900)
def test_odd_even_from_100_suggested_labels(system: tuple[ServerThread, Loop]) -> None:
    server, loop = system
    task = Task.load()
    with TlserveClient(server.target, timeout=60) as client:
        rounds = list(label_rounds(client, task, strategy="suggested", rounds=ROUNDS))
        labeled = client.list_labels()
    first, final = rounds[0], rounds[-1]
    assert sum(count.samples for count in labeled) == final.labels <= 100
    assert final.version != first.version
    with TlserveClient(server.target) as client:
        card = client.get_model().card["backbone_source"]["card"]
    assert card["split"].startswith("split_halves") and card["digits"] == list(range(10))
    print(
        f"\nodd/even on {len(task.evaluation)} never-labeled digits: "
        + ", ".join(f"{r.holdout_accuracy:.3f} at {r.labels} labels" for r in rounds)
    )
    assert final.holdout_accuracy >= 0.95
    # Feedback changed predictions: digits the first version got wrong are now right.
    truth = [parity(task.digits[i]) for i in task.evaluation]
    fixed = sum(
        before != t and after == t
        for before, after, t in zip(first.predictions, final.predictions, truth, strict=True)
    )
    assert fixed > 0 and final.holdout_accuracy > first.holdout_accuracy
    assert final.live_accuracy is not None and 0 <= final.live_accuracy <= 1
    value = loop.metrics.registry.get_sample_value
    model = {"model": "tlserve"}  # the default model's series
    assert (value("tlserve_trainer_runs_total", {**model, "result": "promoted"}) or 0) >= ROUNDS + 1
    assert (value("tlserve_trainer_holdout_accuracy", model) or 0) > 0
    assert (value("tlserve_trainer_feedback_to_publish_seconds_count", model) or 0) >= ROUNDS + 1
    train = {**model, "stage": "train"}
    assert (value("tlserve_trainer_stage_seconds_count", train) or 0) >= ROUNDS + 1
    assert np.isfinite(final.feedback_to_serve_seconds)
    served = server.metrics_registry.get_sample_value
    assert (
        served("tlserve_feedback_to_serve_seconds_count", {"model": "tlserve"}) or 0
    ) >= ROUNDS + 1
