"""The promotion gate: a run that would regress is not promoted and says why."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlserve.server.registry import Registry
from tlserve.server.store.base import sample_id_of
from tlserve.server.store.labels import in_holdout
from tlserve.server.store.sqlite import SqliteFeedbackStore
from tlserve.trainer.evaluation import PromotionGate, evaluate
from tlserve.trainer.pipeline import Trainer
from tlserve.trainer.settings import TrainerSettings

pytestmark = pytest.mark.slow  # TensorFlow: trains heads


def test_gate_rules() -> None:
    gate = PromotionGate(min_accuracy=0.8, max_regression=0.02, min_samples_per_class=3)
    assert gate.decide(0.9, 0.91, {"a": 5, "b": 5}).promote
    low = gate.decide(0.7, None, {"a": 5, "b": 5})
    assert not low.promote and "below the minimum 0.8000" in low.reasons[0]
    regress = gate.decide(0.85, 0.9, {"a": 5, "b": 5})
    assert (
        not regress.promote and "regresses from the served version's 0.9000" in regress.reasons[0]
    )
    thin = gate.decide(0.95, None, {"a": 5, "b": 2})
    assert not thin.promote and "b (2)" in thin.reasons[0]
    unknown = gate.decide(None, 0.9, {"a": 5, "b": 5})
    assert not unknown.promote and "holdout split is empty" in unknown.reasons[0]


def test_evaluate_counts_per_class_and_confusion() -> None:
    metrics = evaluate(["a", "a", "b", "b"], ["a", "b", "b", "c"], ["a", "b"])
    assert metrics["accuracy"] == 0.5
    assert metrics["confusion_matrix"]["labels"] == ["a", "b", "c"]
    assert metrics["confusion_matrix"]["rows_actual_columns_predicted"] == [
        [1, 0, 0],
        [1, 1, 0],
        [0, 1, 0],
    ]
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "support": 1}


def colour_png(rgb: tuple[int, int, int], jitter: int) -> bytes:
    pixels = np.clip(np.array(rgb) + np.random.default_rng(jitter).integers(-20, 20, 3), 0, 255)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), tuple(int(v) for v in pixels)).save(buffer, "PNG")
    return buffer.getvalue()


def small_trainer(
    tmp_path: Path, **overrides: object
) -> tuple[SqliteFeedbackStore, Registry, TrainerSettings]:
    """A store, a registry and settings for a small untrained MobileNetV2 at 32x32."""
    settings = TrainerSettings(
        data_dir=tmp_path,
        backbone="MobileNetV2",
        backbone_weights="none",
        input_size=32,
        metrics_port=None,
        **overrides,  # type: ignore[arg-type]
    )
    return (
        SqliteFeedbackStore(tmp_path / "feedback.sqlite3"),
        Registry.local(tmp_path / "registry"),
        settings,
    )


@pytest.mark.timeout(600)
def test_a_regressing_run_is_not_promoted(tmp_path: Path) -> None:
    """Good labels give a good model; then the training split's labels are flipped (the
    holdout keeps the truth), so the next model would be worse on the same holdout than
    the served one: it stays unpublished, and the record says why."""
    store, registry, settings = small_trainer(
        tmp_path, holdout_percent=40, min_samples_per_class=2, epochs=60, max_regression=0.02
    )
    trainer = Trainer(settings, store, registry)
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    images = {name: [colour_png(rgb, i) for i in range(30)] for name, rgb in colours.items()}
    for name, pngs in images.items():
        for data in pngs:
            store.add_label(principal="test", image=data, label=name, source="truth")
    first = trainer.run_once("good labels")
    assert first.result == "promoted", first.reasons
    served_accuracy = first.metrics["holdout"]["accuracy"]

    for name, pngs in images.items():
        wrong = "blue" if name == "red" else "red"
        for data in pngs:
            if not in_holdout(sample_id_of(data), settings.holdout_percent):
                store.add_label(principal="test", image=data, label=wrong, source="vandal")
    second = trainer.run_once("flipped labels")
    store.close()
    assert second.result == "rejected"
    assert second.version is None and registry.current() == first.version
    assert any("regresses from the served version" in reason for reason in second.reasons)
    assert second.metrics["served_version_holdout"]["accuracy"] <= served_accuracy + 1e-9
    recorded = (tmp_path / "trainer" / "runs" / second.run_id / "record.json").read_text()
    assert '"result": "rejected"' in recorded and "regresses" in recorded


@pytest.mark.timeout(600)
def test_waiting_classes_and_excluded_principals_never_stop_training(tmp_path: Path) -> None:
    """Poisoning through the trainer: a quarantined class, an approved class still too
    short, and a vandal's relabels (an excluded principal); it trains on the rest."""
    store, registry, settings = small_trainer(
        tmp_path,
        min_samples_per_class=3,
        max_regression=1.0,
        epochs=30,
        exclude_principals="token:vandal",
    )
    red = [colour_png((220, 30, 30), i) for i in range(25)]
    blue = [colour_png((30, 30, 220), i) for i in range(25)]
    for label, images in (("red", red), ("blue", blue)):
        for image in images:
            store.add_label(principal="token:team", image=image, label=label, source="s")
    # One image of a new class (quarantined), a class of two images that an admin let in
    # (too few to train yet), and a vandal relabeling red as blue.
    store.add_label(
        principal="token:team", image=colour_png((30, 220, 30), 1), label="green", source="s"
    )
    store.approve_labels(["teal"], "token:admin")
    for i in range(2):
        store.add_label(
            principal="token:team", image=colour_png((30, 200, 200), i), label="teal", source="s"
        )
    for image in red:
        store.add_label(principal="token:vandal", image=image, label="blue", source="s")

    record = Trainer(settings, store, registry).run_once("poisoned")
    store.close()
    assert record.result == "promoted", record.reasons
    assert record.dataset["labels"] == ["blue", "red"]
    assert record.dataset["waiting"]["green"].startswith("quarantined: 4 more images")
    assert "of 3 training samples" in record.dataset["waiting"]["teal"]
    per_class = record.dataset["train_per_class"]
    assert per_class["red"] + per_class["blue"] == record.dataset["train"]
    assert per_class["red"] > 10  # the vandal's relabels were not counted
