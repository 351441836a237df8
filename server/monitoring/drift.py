"""Drift in feature space: live features tested against a sketch of the training features.

The sketch (`DriftReference`, written by the trainer beside each version) is a PCA basis of
the training features and the projections of a reference sample onto it. The basis is fitted
on one half of the rows and the reference sample projected from the other half: in a
thousand-dimensional feature space, the rows a basis was fitted on spread wider along it
than new rows do, which a test would read as drift on every window.

The server (`DriftMonitor`) projects each prediction's features onto the basis, keeps a
sliding window, and every `every` predictions tests the window against the reference, one
two-sample Kolmogorov-Smirnov test per component with a Bonferroni correction (the p value
is the smallest component's times the component count). It is the test alibi-detect's
KSDrift runs offline, here on the features the backbone already computed for the answer.
"""

from __future__ import annotations

import io
import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from tlserve.server.errors import ModelRejected

REFERENCE_FILE = "drift_reference.npz"
# A basis needs rows to be fitted on and a reference sample to test against.
MIN_REFERENCE_ROWS = 40
_COMPONENTS = 8
_MAX_REFERENCE_SAMPLE = 1000


@dataclass(frozen=True)
class DriftReference:
    """The training features' sketch: center (D,), basis (k, D), reference projections (m, k)."""

    center: np.ndarray
    basis: np.ndarray
    reference: np.ndarray

    @property
    def feature_dim(self) -> int:
        return int(self.center.shape[0])

    @property
    def components(self) -> int:
        return int(self.basis.shape[0])

    def project(self, features: np.ndarray) -> np.ndarray:
        centered = np.asarray(features, np.float64) - self.center
        return centered @ self.basis.T

    @classmethod
    def build(cls, features: np.ndarray, seed: int = 0) -> DriftReference | None:
        """From training features; None when there are too few rows for a sketch."""
        rows = np.asarray(features, np.float64)
        if len(rows) < MIN_REFERENCE_ROWS:
            return None
        order = np.random.default_rng(seed).permutation(len(rows))
        half = len(rows) // 2
        fit_rows, held_rows = rows[order[:half]], rows[order[half:]]
        held_rows = held_rows[:_MAX_REFERENCE_SAMPLE]
        center = fit_rows.mean(axis=0)
        _, singular, vt = np.linalg.svd(fit_rows - center, full_matrices=False)
        # Components that carry variance only: an untrained backbone can be rank-deficient.
        useful = int(np.sum(singular > singular[0] * 1e-6)) if singular.size else 0
        k = max(1, min(_COMPONENTS, useful))
        basis = vt[:k]
        reference = (held_rows - center) @ basis.T
        return cls(center=center, basis=basis, reference=np.sort(reference, axis=0))

    def outlying(self, features: np.ndarray, share: float = 0.05) -> np.ndarray:
        """Per row: whether it lies further out along some component than all but `share`
        of the reference rows do (their own outlyingness, measured the same way)."""
        reference_level = np.quantile(self._outlyingness(self.reference), 1 - share)
        return self._outlyingness(self.project(features)) > reference_level

    def _outlyingness(self, projected: np.ndarray) -> np.ndarray:
        """max over components of |2 F(x) - 1|, F the reference's empirical CDF (mid-rank):
        0 at every component's median, near 1 beyond the reference's range."""
        m = len(self.reference)
        deviation = np.zeros(len(projected))
        for j in range(self.components):
            column = self.reference[:, j]
            rank = np.searchsorted(column, projected[:, j], side="left") + np.searchsorted(
                column, projected[:, j], side="right"
            )
            deviation = np.maximum(deviation, np.abs(rank / m - 1.0))
        return deviation

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, center=self.center, basis=self.basis, reference=self.reference)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, feature_dim: int, what: str) -> DriftReference:
        """A version's sketch, refused (ModelRejected) when it is not one for its backbone."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                names = ("center", "basis", "reference")
                center, basis, reference = (np.asarray(arrays[n], np.float64) for n in names)
        except Exception as exc:  # numpy raises many types for a damaged archive
            raise ModelRejected(f"{what}: {REFERENCE_FILE} is not readable: {exc}") from None
        k = basis.shape[0] if basis.ndim == 2 else 0
        if (
            center.shape != (feature_dim,)
            or basis.shape != (k, feature_dim)
            or not 1 <= k <= 64
            or reference.ndim != 2
            or reference.shape[1] != k
            or len(reference) < MIN_REFERENCE_ROWS // 2
            or not all(np.isfinite(a).all() for a in (center, basis, reference))
        ):
            raise ModelRejected(
                f"{what}: {REFERENCE_FILE} does not fit the backbone's {feature_dim} features "
                f"(center {list(center.shape)}, basis {list(basis.shape)}, "
                f"reference {list(reference.shape)})"
            )
        return cls(center=center, basis=basis, reference=np.sort(reference, axis=0))


@dataclass(frozen=True, slots=True)
class DriftState:
    """The last test's outcome; `p_value` is None before the first full window."""

    p_value: float | None
    statistic: float
    alarm: bool
    window: int
    tested_windows: int
    alarmed_windows: int
    predictions: int


class DriftMonitor:
    """A sliding window of projected live features, tested every `every` predictions;
    thread-safe (rows arrive from the inference thread, reports are read elsewhere)."""

    def __init__(self, reference: DriftReference, *, window: int, every: int, alpha: float) -> None:
        self.reference = reference
        self.window = window
        self.every = every
        self.alpha = alpha
        self._rows: deque[np.ndarray] = deque(maxlen=window)
        self._since_test = 0
        self._predictions = 0
        self._state = DriftState(None, 0.0, False, window, 0, 0, 0)
        self._lock = threading.Lock()

    def observe(self, features: np.ndarray) -> None:
        projected = self.reference.project(features)
        with self._lock:
            self._rows.extend(projected)
            self._predictions += len(projected)
            self._since_test += len(projected)
            if len(self._rows) < self.window or self._since_test < self.every:
                return
            self._since_test = 0
            live = np.stack(self._rows)
            tested = self._state.tested_windows + 1
        statistic, p_value = ks_test(live, self.reference.reference)
        alarm = p_value < self.alpha
        with self._lock:
            self._state = DriftState(
                p_value=p_value,
                statistic=statistic,
                alarm=alarm,
                window=self.window,
                tested_windows=tested,
                alarmed_windows=self._state.alarmed_windows + int(alarm),
                predictions=self._predictions,
            )

    def state(self) -> DriftState:
        with self._lock:
            return DriftState(
                self._state.p_value,
                self._state.statistic,
                self._state.alarm,
                self.window,
                self._state.tested_windows,
                self._state.alarmed_windows,
                self._predictions,
            )


def ks_test(live: np.ndarray, reference_sorted: np.ndarray) -> tuple[float, float]:
    """(largest KS statistic over components, Bonferroni-corrected p value) of `live`
    (n, k) against the column-sorted reference (m, k)."""
    n, m = len(live), len(reference_sorted)
    components = live.shape[1]
    live_sorted = np.sort(live, axis=0)
    statistics = np.empty(components)
    for j in range(components):
        points = np.concatenate([live_sorted[:, j], reference_sorted[:, j]])
        live_cdf = np.searchsorted(live_sorted[:, j], points, side="right") / n
        reference_cdf = np.searchsorted(reference_sorted[:, j], points, side="right") / m
        statistics[j] = np.max(np.abs(live_cdf - reference_cdf))
    effective = n * m / (n + m)
    smallest = min(kolmogorov_survival(_stephens(effective) * d) for d in statistics)
    return float(statistics.max()), min(1.0, smallest * components)


def _stephens(effective_n: float) -> float:
    """Stephens' small-sample correction of the KS scale factor."""
    root = math.sqrt(effective_n)
    return root + 0.12 + 0.11 / root


def kolmogorov_survival(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution: 2 * sum (-1)^(j-1) exp(-2 j^2 x^2)."""
    if x <= 0.2:
        return 1.0
    total = 0.0
    for j in range(1, 101):
        term = math.exp(-2.0 * j * j * x * x)
        total += term if j % 2 else -term
        if term < 1e-16:
            break
    return min(1.0, max(0.0, 2.0 * total))
