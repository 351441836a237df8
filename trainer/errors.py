"""Trainer errors: each says what went wrong and what to do about it."""

from __future__ import annotations


class TrainerError(Exception):
    """A training run cannot proceed; the registry is left as it was."""


class ExportError(TrainerError):
    """A model could not be exported to a valid, parity-checked ONNX graph."""


class NotEnoughData(TrainerError):
    """Too few labeled samples (or classes) to train or evaluate."""
