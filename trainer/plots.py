"""Model-card plots as PNG bytes: training curves and the confusion matrix."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to PNG only
import matplotlib.pyplot as plt


def training_curves(history: dict[str, list[float]]) -> bytes:
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, axis in (("loss", loss_axis), ("accuracy", accuracy_axis)):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                axis.plot(history[prefix + key], style, label=(prefix or "train_") + key)
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend()
    return _png(figure)


def confusion_matrix(matrix: dict[str, Any]) -> bytes:
    labels, counts = matrix["labels"], matrix["rows_actual_columns_predicted"]
    size = max(3.0, 0.5 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(counts, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    for row, values in enumerate(counts):
        for column, value in enumerate(values):
            axis.text(column, row, str(value), ha="center", va="center")
    return _png(figure)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
