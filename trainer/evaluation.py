"""Holdout evaluation (accuracy, per-class precision/recall, confusion matrix) and the
promotion gate, which decides from paired evidence whether a new version may replace the
served one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def evaluate(
    predicted: Sequence[str], actual: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Metrics of predicted vs actual labels; `labels` orders the confusion matrix rows/columns."""
    order = list(labels) + sorted(set(actual) - set(labels))
    index = {label: i for i, label in enumerate(order)}
    matrix = np.zeros((len(order), len(order)), dtype=np.int64)
    for p, a in zip(predicted, actual, strict=True):
        matrix[index[a], index[p]] += 1
    per_class = {}
    for label, i in index.items():
        predicted_as = matrix[:, i].sum()
        support = matrix[i].sum()
        per_class[label] = {
            "precision": float(matrix[i, i] / predicted_as) if predicted_as else 0.0,
            "recall": float(matrix[i, i] / support) if support else 0.0,
            "support": int(support),
        }
    total = int(matrix.sum())
    return {
        "accuracy": float(np.trace(matrix) / total) if total else None,
        "samples": total,
        "per_class": per_class,
        "confusion_matrix": {"labels": order, "rows_actual_columns_predicted": matrix.tolist()},
    }


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), exactly (in log space, so n may be large)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(k + 1, dtype=np.float64)
    log_terms = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(x + 1) + math.lgamma(n - x + 1) for x in i])
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
    )
    peak = log_terms.max()
    return float(min(1.0, math.exp(peak) * np.exp(log_terms - peak).sum()))


@dataclass(frozen=True)
class PairedEvidence:
    """The candidate and the served version judged on the same holdout samples."""

    samples: int
    candidate_correct: int
    served_correct: int
    # Discordant pairs: only one of the two got the sample right.
    only_candidate: int
    only_served: int
    # One-sided exact sign test on the discordant pairs: how likely a difference at least
    # this much in the served version's favour is if the two are equally good.
    p_value_worse: float
    # Paired bootstrap bounds of candidate minus served accuracy at the gate's confidence.
    difference: float
    difference_lower: float
    difference_upper: float

    @classmethod
    def measure(
        cls,
        candidate: np.ndarray,
        served: np.ndarray,
        *,
        confidence: float,
        resamples: int = 4000,
        seed: int = 0,
    ) -> PairedEvidence:
        candidate, served = np.asarray(candidate, bool), np.asarray(served, bool)
        n = len(candidate)
        only_candidate = int(np.sum(candidate & ~served))
        only_served = int(np.sum(served & ~candidate))
        discordant = only_candidate + only_served
        p_worse = binomial_cdf(only_candidate, discordant, 0.5) if discordant else 1.0
        if n:
            # Resampling n pairs with replacement only moves the counts of the three pair
            # kinds, so the bootstrap is drawn exactly as a multinomial.
            shares = [only_candidate / n, only_served / n, 1 - discordant / n]
            counts = np.random.default_rng(seed).multinomial(n, shares, size=resamples)
            differences = (counts[:, 0] - counts[:, 1]) / n
            tail = (1 - confidence) * 100
            lower, upper = np.percentile(differences, [tail, 100 - tail])
        else:
            lower = upper = 0.0
        return cls(
            samples=n,
            candidate_correct=int(candidate.sum()),
            served_correct=int(served.sum()),
            only_candidate=only_candidate,
            only_served=only_served,
            p_value_worse=p_worse,
            difference=(only_candidate - only_served) / n if n else 0.0,
            difference_lower=float(lower),
            difference_upper=float(upper),
        )


@dataclass(frozen=True)
class PromotionGate:
    """Promote unless the holdout shows, with the stated confidence, that the candidate is
    worse: below the accuracy floor, or behind the served version on the same samples by
    more than the tolerated drop. A difference the data cannot resolve (a small or tied
    holdout) never blocks a version trained on more labels."""

    min_accuracy: float
    max_regression: float
    confidence: float = 0.95

    def decide(
        self, candidate_correct: np.ndarray, paired: tuple[np.ndarray, np.ndarray] | None
    ) -> GateDecision:
        """`candidate_correct`: whether the candidate got each holdout sample right;
        `paired`: the candidate's and the served version's correctness on the holdout
        samples the served version never trained on (None when nothing is served)."""
        alpha = 1 - self.confidence
        reasons: list[str] = []
        checks: dict[str, Any] = {"confidence": self.confidence}
        n, right = len(candidate_correct), int(np.sum(candidate_correct))
        floor_p = binomial_cdf(right, n, self.min_accuracy) if n and self.min_accuracy else 1.0
        checks["min_accuracy"] = {
            "required": self.min_accuracy,
            "candidate": right / n if n else None,
            "samples": n,
            "p_value_below": floor_p,
        }
        if floor_p < alpha:
            reasons.append(
                f"holdout accuracy {right}/{n} = {right / n:.4f} is below the minimum "
                f"{self.min_accuracy:.4f} (p = {floor_p:.3g} < {alpha:.3g})"
            )
        if paired is not None:
            evidence = PairedEvidence.measure(*paired, confidence=self.confidence)
            checks["paired"] = asdict(evidence) | {"allowed_drop": self.max_regression}
            if evidence.p_value_worse < alpha and evidence.difference_upper < -self.max_regression:
                reasons.append(
                    f"on the same {evidence.samples} holdout samples the candidate is worse "
                    f"than the served version: {evidence.candidate_correct} vs "
                    f"{evidence.served_correct} right ({evidence.only_served} only the served "
                    f"version got right, {evidence.only_candidate} only the candidate; "
                    f"p = {evidence.p_value_worse:.3g}); at {self.confidence:.0%} confidence "
                    f"it regresses by at least {-evidence.difference_upper:.4f}, more than the "
                    f"tolerated {self.max_regression:.4f}"
                )
        if reasons:
            return GateDecision(False, reasons, checks)
        if n == 0:
            reasons.append("promoted without evidence: no class has holdout samples to spare yet")
        elif paired is None:
            reasons.append(f"promoted: nothing served; holdout accuracy {right}/{n}")
        else:
            measured = checks["paired"]
            reasons.append(
                f"promoted: {measured['candidate_correct']} vs {measured['served_correct']} of "
                f"{measured['samples']} holdout samples right (candidate vs served; difference "
                f"{measured['difference']:+.4f}, {self.confidence:.0%} interval "
                f"[{measured['difference_lower']:+.4f}, {measured['difference_upper']:+.4f}])"
            )
        return GateDecision(True, reasons, checks)
