"""The client's domain objects: what goes in and comes out of every call (no protobuf)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ImageLike = bytes | str | Path | np.ndarray
"""Encoded image bytes, a path to an image file, or a uint8/float32 HxWx3 pixel array."""


@dataclass(frozen=True, slots=True)
class Classification:
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Prediction:
    prediction_id: str
    top: tuple[Classification, ...]

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def score(self) -> float:
        return self.top[0].score


@dataclass(frozen=True, slots=True)
class PredictResult:
    model_version: str
    predictions: tuple[Prediction, ...]
    # How many labels the answering version has (every prediction's `top` holds at most
    # this many); 0 from a server older than this field.
    label_count: int = 0


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One label: for a kept prediction (`prediction_id`) or for an `image`, not both."""

    label: str
    prediction_id: str = ""
    image: ImageLike | None = None
    idempotency_key: str = ""
    source: str = ""
    # The model the label is for; empty: the server's default model.
    model: str = ""

    def __post_init__(self) -> None:
        if bool(self.prediction_id) == (self.image is not None):
            raise ValueError("give exactly one of prediction_id and image")


@dataclass(frozen=True, slots=True)
class FeedbackReceipt:
    sample_id: str
    label: str
    duplicate: bool
    previous_label: str


@dataclass(frozen=True, slots=True)
class StreamReceipt:
    accepted: int
    rejected: int
    errors: tuple[tuple[int, str, str], ...]  # (item index, status name, reason)
    # Of the accepted: items whose idempotency key was stored before (resent).
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class LabelCount:
    """A label's samples (of which in the holdout) and whether training uses it:
    `known`, `approved`, `admitted` or `quarantined` (needing `images_needed` more)."""

    label: str
    samples: int
    holdout: int
    status: str
    images_needed: int
    labelers_needed: int = 0


@dataclass(frozen=True, slots=True)
class LabelSuggestion:
    prediction_id: str
    uncertainty: float
    model_version: str
    top: tuple[Classification, ...]
    image_png: bytes


@dataclass(frozen=True, slots=True)
class TrainingRun:
    run_id: str
    # promoted, rejected (by the promotion gate), skipped (not enough data) or failed
    result: str
    reasons: tuple[str, ...]
    version: str
    finished_at: float
    labels: int


@dataclass(frozen=True, slots=True)
class TrainingStatus:
    """What the trainer is doing or waiting for (GetTrainingStatus)."""

    # unknown (no trainer reported), training, idle or waiting
    state: str
    # One sentence for people.
    detail: str
    updated_at: float
    # The trainer has not reported for minutes: it may not be running.
    stale: bool
    last_run: TrainingRun | None
    waiting_classes: dict[str, str]
    new_labels: int
    next_trigger: str


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model the server serves: its name, served version ("" before the first)."""

    name: str
    version: str
    is_default: bool


@dataclass(frozen=True, slots=True)
class LiveMonitoring:
    """How the served version does on recent traffic without labels (GetModel)."""

    # Mean calibrated confidence of the last `estimated_from` answers: expected accuracy.
    estimated_accuracy: float
    estimated_from: int
    temperature: float
    # "no reference", "collecting", "ok" or "drift".
    drift_state: str
    drift_p_value: float
    drift_statistic: float
    drift_window: int
    drift_tested_windows: int
    drift_alarmed_windows: int


@dataclass(frozen=True, slots=True)
class ExperimentEvidence:
    """Labels on predictions both heads scored, and what the paired test says of them."""

    decision: str  # "running", "promote" or "abandon"
    reason: str
    pairs: int
    wins: int  # the challenger right where the champion was wrong
    losses: int
    champion_correct: int
    challenger_correct: int
    p_better: float  # always-valid p value of "the challenger is no better"
    p_worse: float
    win_share_low: float  # confidence sequence for the share of disagreements it wins
    win_share_high: float


@dataclass(frozen=True, slots=True)
class Experiment:
    """A model's champion/challenger experiment: running, or how the last one ended."""

    champion_version: str
    challenger_version: str
    rollout: str  # "shadow" or "canary"
    share: float
    state: str  # "running", "promoted" or "abandoned"
    reason: str
    started_at: float
    started_by: str
    ended_at: float
    ended_by: str
    deadline: float
    max_labels: int
    alpha: float
    evidence: ExperimentEvidence | None


@dataclass(frozen=True, slots=True)
class ModelSummary:
    model: str
    version: str
    labels: tuple[str, ...]
    backbone_id: str
    input_size: tuple[int, int]
    created_at: str
    parent_version: str
    serving: bool
    execution_providers: tuple[str, ...]
    card: dict[str, Any]
    live_accuracy: float
    live_feedback_count: int
    # ListModels: why the version cannot be read (its other fields are then empty).
    error: str = ""
    # GetModel of the served version: the trainer's status.
    training: TrainingStatus | None = None
    # GetModel of the served version: its accuracy estimate and drift state.
    monitoring: LiveMonitoring | None = None
    # GetModel of the served version: the model's experiment (running, or the last one).
    experiment: Experiment | None = None
