"""One served version's live monitoring: its accuracy estimate and its drift test together,
fed with every answered batch's features and probabilities, read by GetModel and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from tlserve.server.monitoring.accuracy import AccuracyEstimate, AccuracyEstimator
from tlserve.server.monitoring.calibration import Calibration
from tlserve.server.monitoring.drift import DriftMonitor, DriftReference, DriftState


@dataclass(frozen=True, slots=True)
class MonitoringSettings:
    estimate_window: int = 1000
    drift_window: int = 200
    drift_test_every: int = 25
    drift_alpha: float = 0.01


class DriftVerdict(StrEnum):
    NO_REFERENCE = "no reference"  # the version carries no sketch (older, or too few samples)
    COLLECTING = "collecting"  # fewer live predictions than one window
    OK = "ok"
    DRIFT = "drift"


@dataclass(frozen=True, slots=True)
class LiveReport:
    estimate: AccuracyEstimate
    drift_verdict: DriftVerdict
    drift: DriftState | None


class VersionMonitor:
    def __init__(
        self,
        calibration: Calibration,
        reference: DriftReference | None,
        settings: MonitoringSettings,
    ) -> None:
        self.accuracy = AccuracyEstimator(calibration, settings.estimate_window)
        self.drift = (
            DriftMonitor(
                reference,
                window=settings.drift_window,
                every=settings.drift_test_every,
                alpha=settings.drift_alpha,
            )
            if reference is not None
            else None
        )

    def observe(self, features: np.ndarray, probabilities: np.ndarray) -> None:
        self.accuracy.observe(probabilities)
        if self.drift is not None:
            self.drift.observe(features)

    def report(self) -> LiveReport:
        if self.drift is None:
            return LiveReport(self.accuracy.estimate(), DriftVerdict.NO_REFERENCE, None)
        state = self.drift.state()
        if state.p_value is None:
            verdict = DriftVerdict.COLLECTING
        else:
            verdict = DriftVerdict.DRIFT if state.alarm else DriftVerdict.OK
        return LiveReport(self.accuracy.estimate(), verdict, state)
