"""The promotion gate: a run that would regress is not promoted and says why."""

from __future__ import annotations

from math import comb
from pathlib import Path

import numpy as np
import pytest

from tests.support import colour_png
from tests.training import small_trainer
from tlserve.server.store.base import sample_id_of
from tlserve.server.store.labels import in_holdout
from tlserve.trainer.evaluation import PromotionGate, binomial_cdf, evaluate
from tlserve.trainer.pipeline import Trainer

pytestmark = pytest.mark.slow  # TensorFlow: trains heads


def right(*counts: tuple[bool, int]) -> np.ndarray:
    """A per-sample correctness vector from (value, how many) runs."""
    return np.concatenate([np.zeros(0, bool), *(np.full(n, value, bool) for value, n in counts)])


def test_the_gate_never_rejects_what_a_small_holdout_cannot_resolve() -> None:
    gate = PromotionGate(min_accuracy=0.0, max_regression=0.0)
    # The "0.0000 regresses from 1.0000": one holdout sample.
    one = gate.decide(right((False, 1)), (right((False, 1)), right((True, 1))))
    assert one.promote, one.reasons
    # A few dozen labels where the served version is ahead by two samples: not resolvable.
    candidate = right((True, 20), (False, 4))
    served = right((True, 22), (False, 2))
    close = gate.decide(candidate, (candidate, served))
    assert close.promote, close.reasons
    evidence = close.checks["paired"]
    assert evidence["samples"] == 24 and evidence["only_served"] == 2
    assert evidence["p_value_worse"] > 0.05
    assert evidence["difference_lower"] < 0 <= evidence["difference_upper"]
    # Better on the same samples: promoted, and the reason says by how much.
    better = gate.decide(served, (served, candidate))
    assert better.promote and "22 vs 20 of 24" in better.reasons[0]
    # Nothing to judge on (no class can spare holdout samples yet): promoted, said so.
    empty = gate.decide(right(), None)
    assert empty.promote and "without evidence" in empty.reasons[0]


def test_the_gate_refuses_a_candidate_the_evidence_shows_worse() -> None:
    gate = PromotionGate(min_accuracy=0.8, max_regression=0.02)
    served = right((True, 40))
    flipped = right((False, 35), (True, 5))
    decision = gate.decide(flipped, (flipped, served))
    assert not decision.promote
    assert any("worse than the served version: 5 vs 40 right" in r for r in decision.reasons)
    assert any("below the minimum 0.8000" in r for r in decision.reasons)
    assert decision.checks["paired"]["p_value_worse"] < 1e-6
    assert decision.checks["paired"]["difference_upper"] < -0.02
    # A floor miss the data shows is refused with nothing served; one it cannot, is not.
    assert not gate.decide(right((True, 10), (False, 30)), None).promote
    assert gate.decide(right((True, 3), (False, 1)), None).promote
    # A drop the evidence shows but within the tolerated one passes.
    tolerant = PromotionGate(min_accuracy=0.0, max_regression=0.2)
    slightly = right((True, 180), (False, 20))
    assert tolerant.decide(slightly, (slightly, right((True, 200)))).promote


def test_binomial_cdf_matches_exact_sums() -> None:
    for n, k, p in ((10, 3, 0.5), (40, 30, 0.8), (7, 0, 0.3), (12, 12, 0.5)):
        exact = sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
        assert abs(binomial_cdf(k, n, p) - exact) < 1e-12
    assert binomial_cdf(-1, 5, 0.5) == 0.0


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
    # One labeler: its first classes train once an admin lets them in (the quorum counts
    # distinct principals).
    store.approve_labels(list(colours), "token:admin")
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
    assert second.result == "rejected", (second.reasons, second.metrics["gate"])
    assert second.version is None and registry.current() == first.version
    assert any("worse than the served version" in reason for reason in second.reasons)
    assert second.metrics["gate"]["paired"]["p_value_worse"] < 0.05
    assert second.metrics["served_version_holdout"]["accuracy"] <= served_accuracy + 1e-9
    recorded = (tmp_path / "trainer" / "runs" / second.run_id / "record.json").read_text()
    assert '"result": "rejected"' in recorded and '"p_value_worse"' in recorded


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
    store.approve_labels(["red", "blue"], "token:admin")
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
    # A labeler who trains disputes three blue images: they train neither class.
    for image in blue[:3]:
        store.add_label(principal="token:rival", image=image, label="red", source="s")

    record = Trainer(settings, store, registry).run_once("poisoned")
    store.close()
    assert record.result == "promoted", record.reasons
    assert record.dataset["labels"] == ["blue", "red"]
    assert record.dataset["waiting"]["green"].startswith("quarantined: 4 more labelers")
    assert "of 3 training samples" in record.dataset["waiting"]["teal"]
    per_class = record.dataset["train_per_class"]
    assert per_class["red"] + per_class["blue"] == record.dataset["train"]
    assert per_class["red"] > 10  # the vandal's relabels were not counted
    assert record.dataset["conflicting_samples"] == 3
    trained = record.dataset["train"] + record.dataset["holdout"]
    assert trained == len(red) + len(blue) - 3  # green and teal wait; disputes are out


@pytest.mark.timeout(600)
def test_a_class_with_one_label_trains_even_when_its_label_hashes_into_the_holdout(
    tmp_path: Path,
) -> None:
    """The issue's "7 has 0": one label of a class, which the content hash puts in the
    holdout, used to stop the whole run. It trains (reported as not evaluated)."""
    store, registry, settings = small_trainer(tmp_path, epochs=20)
    for label, rgb in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        for i in range(12):
            store.add_label(principal="t", image=colour_png(rgb, i), label=label, source="s")
    lone = next(
        image
        for image in (colour_png((30, 220, 30), i) for i in range(200))
        if in_holdout(sample_id_of(image), settings.holdout_percent)
    )
    store.approve_labels(["red", "blue", "green"], "token:admin")
    store.add_label(principal="t", image=lone, label="green", source="s")
    record = Trainer(settings, store, registry).run_once("one green label")
    store.close()
    assert record.result == "promoted", record.reasons
    assert record.dataset["labels"] == ["blue", "green", "red"]
    assert record.dataset["train_per_class"]["green"] == 1
    assert record.dataset["holdout_per_class"]["green"] == 0
    assert record.dataset["not_evaluated"] == ["green"]
    assert sample_id_of(lone) in record.dataset["borrowed_from_holdout"]
    assert registry.model_manifest(registry.current() or "").labels == ("blue", "green", "red")


@pytest.mark.timeout(600)
def test_a_run_with_nothing_held_out_publishes_uncalibrated_and_says_so(tmp_path: Path) -> None:
    """Few labels leave every class too small to hold any out: the run still publishes,
    with the head's confidence as it is (temperature 1 on 0 samples) and no drift sketch."""
    store, registry, settings = small_trainer(tmp_path, epochs=5)
    for label, rgb in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        for i in range(4):
            store.add_label(principal="t", image=colour_png(rgb, i), label=label, source="s")
    store.approve_labels(["red", "blue"], "token:admin")
    record = Trainer(settings, store, registry).run_once("eight labels")
    store.close()
    assert record.result == "promoted", record.reasons
    assert record.dataset["holdout"] == 0
    manifest = registry.model_manifest(registry.current() or "")
    assert manifest.raw["calibration"]["temperature"] == 1.0
    assert manifest.raw["calibration"]["samples"] == 0
    assert manifest.raw["drift_reference"] is None
