"""Accuracy estimated without labels: the mean calibrated confidence of recent answers.

If a head's confidence is calibrated, an answer given with confidence c is right with
probability c, so the mean top-1 confidence over a window of predictions is the expected
share of them that are right (NannyML's CBPE, for top-1 accuracy). It needs no labels,
so it covers the traffic nobody labels; it trusts the calibration, which the trainer fitted
on holdout samples of the training distribution, so it is a statement about in-distribution
traffic and the drift test (`drift.py`) says when traffic is not that.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from tlserve.server.monitoring.calibration import Calibration


@dataclass(frozen=True, slots=True)
class AccuracyEstimate:
    """Expected accuracy of the last `predictions` answers (0 when there were none)."""

    expected_accuracy: float
    predictions: int
    temperature: float


class AccuracyEstimator:
    """A sliding window of calibrated top-1 confidences; thread-safe (rows arrive from the
    inference thread, reports are read from the event loop)."""

    def __init__(self, calibration: Calibration, window: int) -> None:
        self.calibration = calibration
        self._confidences: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def observe(self, probabilities: np.ndarray) -> None:
        """Rows of the head's probabilities, as served."""
        confidences = self.calibration.apply(probabilities).max(axis=1).astype(np.float64)
        with self._lock:
            self._confidences.extend(confidences.tolist())

    def estimate(self) -> AccuracyEstimate:
        with self._lock:
            count = len(self._confidences)
            mean = sum(self._confidences) / count if count else 0.0
        return AccuracyEstimate(
            expected_accuracy=min(1.0, max(0.0, mean)),
            predictions=count,
            temperature=self.calibration.temperature,
        )
