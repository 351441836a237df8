"""The numbers behind live monitoring, on data whose truth is known: a fitted temperature,
the accuracy it predicts, the drift test's false alarms and detections, and the sequential
paired test's error rates measured over thousands of seeded simulated experiments."""

from __future__ import annotations

import numpy as np
import pytest

from tlserve.server.errors import ModelRejected
from tlserve.server.monitoring.accuracy import AccuracyEstimator
from tlserve.server.monitoring.calibration import Calibration, fit_temperature
from tlserve.server.monitoring.drift import DriftMonitor, DriftReference
from tlserve.server.monitoring.sequential import (
    Decision,
    PairedSequentialTest,
    simulate,
    win_share_interval,
)


def overconfident(count: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A head's probabilities softmax(z) where the truth is drawn from softmax(z / T)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3.0, (count, 10))
    logits[np.arange(count), rng.integers(0, 10, count)] += 4.0
    truth_p = np.exp(logits / temperature)
    truth_p /= truth_p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(10, p=row) for row in truth_p])
    served = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (served / served.sum(axis=1, keepdims=True)).astype(np.float32), labels


def test_the_fitted_temperature_is_the_one_the_data_came_from() -> None:
    probabilities, labels = overconfident(4000, temperature=2.5, seed=1)
    calibration = fit_temperature(probabilities, labels)
    assert calibration.temperature == pytest.approx(2.5, rel=0.1)
    assert calibration.samples == 4000
    assert calibration.nll_after is not None and calibration.nll_before is not None
    assert calibration.nll_after < calibration.nll_before


def test_calibrated_confidence_estimates_accuracy_on_unseen_answers() -> None:
    holdout, holdout_labels = overconfident(500, temperature=2.5, seed=2)
    live, live_labels = overconfident(3000, temperature=2.5, seed=3)
    actual = float(np.mean(live.argmax(axis=1) == live_labels))
    raw = AccuracyEstimator(Calibration(), window=3000)
    calibrated = AccuracyEstimator(fit_temperature(holdout, holdout_labels), window=3000)
    for start in range(0, 3000, 64):  # batches, as the inference thread sees them
        raw.observe(live[start : start + 64])
        calibrated.observe(live[start : start + 64])
    estimate = calibrated.estimate()
    assert estimate.predictions == 3000
    assert abs(estimate.expected_accuracy - actual) <= 0.03
    # The head as is claims far more than it gets right: that is what calibration fixes.
    assert raw.estimate().expected_accuracy - actual > 0.1


def test_the_estimate_covers_only_the_newest_window() -> None:
    estimator = AccuracyEstimator(Calibration(), window=10)
    estimator.observe(np.tile([[0.9, 0.1]], (50, 1)).astype(np.float32))
    estimator.observe(np.tile([[0.6, 0.4]], (10, 1)).astype(np.float32))
    assert estimator.estimate().expected_accuracy == pytest.approx(0.6)
    assert estimator.estimate().predictions == 10


def test_too_few_holdout_samples_keep_the_head_as_is() -> None:
    probabilities, labels = overconfident(12, temperature=3.0, seed=4)
    calibration = fit_temperature(probabilities, labels)
    assert calibration.temperature == 1.0 and calibration.samples == 12
    assert np.array_equal(calibration.apply(probabilities), probabilities)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {},
        {"method": "platt"},
        {"method": "temperature", "temperature": "hot"},
        {"method": "temperature", "temperature": float("nan")},
        {"method": "temperature", "temperature": 0.0},
        {"method": "temperature", "temperature": 1e9},
    ],
)
def test_an_unusable_calibration_in_model_json_means_the_head_as_is(raw: object) -> None:
    assert Calibration.from_manifest(raw) == Calibration()


def features(count: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Correlated 64-dimensional features (a backbone's are far from isotropic)."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(0, 1, (16, 64))
    latent = rng.normal(0, 1, (count, 16))
    latent[:, 0] += shift
    return (latent @ mixing + rng.normal(0, 0.1, (count, 64))).astype(np.float32) * 1e-3


def test_in_distribution_windows_rarely_alarm() -> None:
    reference = DriftReference.build(features(1200, seed=1))
    assert reference is not None
    monitor = DriftMonitor(reference, window=200, every=200, alpha=0.01)
    for batch in range(300):  # 300 disjoint windows of new in-distribution rows
        monitor.observe(features(200, seed=100 + batch))
    state = monitor.state()
    assert state.tested_windows == 300
    assert state.alarmed_windows / state.tested_windows <= 0.05


def test_shifted_features_raise_the_alarm_within_a_window() -> None:
    reference = DriftReference.build(features(1200, seed=1))
    assert reference is not None
    monitor = DriftMonitor(reference, window=200, every=25, alpha=0.01)
    monitor.observe(features(200, seed=2))
    assert monitor.state().p_value is not None and not monitor.state().alarm
    drifted = 0
    while not monitor.state().alarm:
        monitor.observe(features(25, seed=3 + drifted, shift=1.5))
        drifted += 25
        assert drifted <= 200, "a shift of 1.5 sd in the main direction went unnoticed"
    assert monitor.state().p_value < 0.01


def test_a_reference_travels_as_bytes_and_is_checked_against_its_backbone() -> None:
    reference = DriftReference.build(features(400, seed=1))
    assert reference is not None
    again = DriftReference.from_bytes(reference.to_bytes(), feature_dim=64, what="v1")
    assert np.array_equal(again.basis, reference.basis)
    assert np.array_equal(again.reference, reference.reference)
    with pytest.raises(ModelRejected, match="does not fit the backbone's 128 features"):
        DriftReference.from_bytes(reference.to_bytes(), feature_dim=128, what="v1")
    with pytest.raises(ModelRejected, match="is not readable"):
        DriftReference.from_bytes(b"not an archive", feature_dim=64, what="v1")


def test_too_few_rows_make_no_reference() -> None:
    assert DriftReference.build(features(30, seed=1)) is None


def test_a_challenger_no_better_is_rarely_promoted() -> None:
    # Champion and challenger right 90% of the time, disagreeing on 10% of the pairs.
    runs = simulate(0.05, 0.05, experiments=3000, alpha=0.05, max_labels=3000, seed=11)
    assert runs.rate(Decision.PROMOTE) <= 0.05


def test_a_clearly_better_challenger_is_promoted_and_a_worse_one_abandoned() -> None:
    better = simulate(0.08, 0.02, experiments=1000, alpha=0.05, max_labels=3000, seed=12)
    assert better.rate(Decision.PROMOTE) >= 0.95
    worse = simulate(0.02, 0.08, experiments=1000, alpha=0.05, max_labels=3000, seed=13)
    assert worse.rate(Decision.PROMOTE) <= 0.01
    # Abandoned early for being worse, not at the bound for showing nothing.
    assert np.median(worse.labels) < 3000


def test_the_running_test_decides_as_the_simulation_does() -> None:
    rng = np.random.default_rng(21)
    for _ in range(20):
        test = PairedSequentialTest(alpha=0.05, max_labels=800)
        draws = rng.random(800)
        for draw in draws:
            test.add(champion_right=not draw < 0.07, challenger_right=not 0.07 <= draw < 0.10)
            if test.evidence().decision != Decision.RUNNING:
                break
        evidence = test.evidence()
        assert evidence.decision != Decision.RUNNING
        assert evidence.wins + evidence.losses <= evidence.pairs
        if evidence.decision == Decision.PROMOTE:
            assert evidence.p_better <= 0.025
            assert evidence.win_share_low > 0.5 or evidence.wins > evidence.losses


def test_evidence_after_a_decision_does_not_change_it() -> None:
    test = PairedSequentialTest(alpha=0.05, max_labels=100)
    while test.evidence().decision == Decision.RUNNING:
        test.add(champion_right=False, challenger_right=True)
    decided = test.evidence()
    assert decided.decision == Decision.PROMOTE
    for _ in range(50):
        test.add(champion_right=True, challenger_right=False)
    assert test.evidence() == decided


def test_no_difference_within_the_bound_abandons() -> None:
    test = PairedSequentialTest(alpha=0.05, max_labels=50)
    for _ in range(50):
        test.add(champion_right=True, challenger_right=True)
    evidence = test.evidence()
    assert evidence.decision == Decision.ABANDON and "within 50" in evidence.reason


def test_the_confidence_sequence_covers_the_true_win_share() -> None:
    rng = np.random.default_rng(31)
    misses = 0
    for _ in range(400):
        wins = rng.binomial(200, 0.6)
        low, high = win_share_interval(int(wins), 200 - int(wins), alpha=0.05)
        misses += not low <= 0.6 <= high
    assert misses / 400 <= 0.05
    assert win_share_interval(0, 0, 0.05) == (0.0, 1.0)
