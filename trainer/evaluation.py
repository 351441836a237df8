"""Holdout evaluation (accuracy, per-class precision/recall, confusion matrix) and the
promotion gate, which decides whether a new version may replace the served one."""

from __future__ import annotations

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


@dataclass(frozen=True)
class PromotionGate:
    """TFX-style: absolute floor, no regression against the served model, enough data."""

    min_accuracy: float
    max_regression: float
    min_samples_per_class: int

    def decide(
        self,
        candidate_accuracy: float | None,
        served_accuracy: float | None,
        train_counts: dict[str, int],
    ) -> GateDecision:
        reasons, checks = [], {}
        thin = {label: n for label, n in train_counts.items() if n < self.min_samples_per_class}
        checks["min_samples_per_class"] = {"required": self.min_samples_per_class, "short": thin}
        if thin:
            reasons.append(
                f"classes with fewer than {self.min_samples_per_class} training samples: "
                + ", ".join(f"{label} ({n})" for label, n in sorted(thin.items()))
            )
        checks["min_accuracy"] = {"required": self.min_accuracy, "candidate": candidate_accuracy}
        if candidate_accuracy is None:
            if self.min_accuracy > 0 or served_accuracy is not None:
                reasons.append("the holdout split is empty, so the candidate cannot be evaluated")
        elif candidate_accuracy < self.min_accuracy:
            reasons.append(
                f"holdout accuracy {candidate_accuracy:.4f} is below the minimum "
                f"{self.min_accuracy:.4f}"
            )
        checks["max_regression"] = {
            "allowed": self.max_regression,
            "candidate": candidate_accuracy,
            "served": served_accuracy,
        }
        if (
            candidate_accuracy is not None
            and served_accuracy is not None
            and candidate_accuracy < served_accuracy - self.max_regression
        ):
            reasons.append(
                f"holdout accuracy {candidate_accuracy:.4f} regresses from the served version's "
                f"{served_accuracy:.4f} by more than {self.max_regression:.4f}"
            )
        if not reasons:
            reasons.append("all checks passed")
            return GateDecision(True, reasons, checks)
        return GateDecision(False, reasons, checks)
