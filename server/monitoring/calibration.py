"""Temperature scaling: one scalar per head that makes its confidence mean what it says.

A head trained to a low loss is overconfident on unseen data; dividing its log-probabilities
by a temperature T > 1 (fitted on samples it never trained on) softens them without moving
the argmax. The trainer fits T on its holdout and writes it into model.json; the server uses
it to estimate accuracy without labels (`accuracy.py`). Served probabilities stay as the head
gives them: clients see what the model says, and calibration is the server's reading of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# Below this many holdout samples a fitted temperature is noise; 1.0 (the head as is) is kept.
MIN_CALIBRATION_SAMPLES = 20
# The search range for 1/T: a temperature between 0.05 and 20.
_MIN_INVERSE, _MAX_INVERSE = 0.05, 20.0
_SEARCH_STEPS = 60
_TINY = 1e-12


@dataclass(frozen=True, slots=True)
class Calibration:
    """A head's temperature and what it was fitted on."""

    temperature: float = 1.0
    samples: int = 0
    nll_before: float | None = None
    nll_after: float | None = None

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Rows of probabilities softened (T > 1) or sharpened (T < 1), still summing to 1."""
        if self.temperature == 1.0:
            return probabilities
        return _scaled(np.log(np.clip(probabilities, _TINY, 1.0)), 1.0 / self.temperature)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "temperature",
            "temperature": self.temperature,
            "samples": self.samples,
            "nll_before": self.nll_before,
            "nll_after": self.nll_after,
        }

    @classmethod
    def from_manifest(cls, raw: Any) -> Calibration:
        """model.json's `calibration`, or the head as is when absent or unusable (a version
        from before calibration, or another publisher's)."""
        if not isinstance(raw, dict) or raw.get("method") != "temperature":
            return cls()
        temperature = raw.get("temperature")
        samples = raw.get("samples")
        if (
            not isinstance(temperature, int | float)
            or isinstance(temperature, bool)
            or not math.isfinite(temperature)
            or not 1 / _MAX_INVERSE <= temperature <= 1 / _MIN_INVERSE
        ):
            return cls()
        return cls(float(temperature), samples if isinstance(samples, int) else 0)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> Calibration:
    """The temperature minimising the negative log-likelihood of `labels` (class indices)
    under `probabilities` (rows of a head's output), by golden-section search on 1/T: the
    NLL of softmax(z / T) is convex in 1/T, so the search finds the optimum."""
    count = len(labels)
    if count < MIN_CALIBRATION_SAMPLES:
        return Calibration(samples=count)
    log_p = np.log(np.clip(np.asarray(probabilities, np.float64), _TINY, 1.0))
    rows = np.arange(count)

    def nll(inverse: float) -> float:
        scaled = log_p * inverse
        top = scaled.max(axis=1)
        log_norm = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
        return float(np.mean(log_norm - scaled[rows, labels]))

    golden = (math.sqrt(5) - 1) / 2
    low, high = math.log(_MIN_INVERSE), math.log(_MAX_INVERSE)
    # Searched in log(1/T): convexity in 1/T makes the NLL unimodal there too.
    a, b = high - golden * (high - low), low + golden * (high - low)
    fa, fb = nll(math.exp(a)), nll(math.exp(b))
    for _ in range(_SEARCH_STEPS):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - golden * (high - low)
            fa = nll(math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + golden * (high - low)
            fb = nll(math.exp(b))
    inverse = math.exp((low + high) / 2)
    return Calibration(
        temperature=round(1.0 / inverse, 6),
        samples=count,
        nll_before=round(nll(1.0), 6),
        nll_after=round(nll(inverse), 6),
    )


def _scaled(log_p: np.ndarray, inverse: float) -> np.ndarray:
    scaled = log_p * inverse
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
