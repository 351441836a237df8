"""The trainer's status as users see it: what it is doing or waiting for, its last run,
and what starts the next one. The trainer reports a document into the feedback store;
every server replica reads it back and completes it with what the store knows now (new
labels, pending requests), so the answer is fresh even between the trainer's reports."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from tlserve.server.store.base import FeedbackStore

# The trainer reports at least this often while it runs ...
HEARTBEAT_SECONDS = 30.0
# ... so a report older than this means it is not running (or cannot reach the store).
STALE_AFTER_SECONDS = 4 * HEARTBEAT_SECONDS


class TrainerState(StrEnum):
    UNKNOWN = "unknown"  # no trainer has reported on this store
    TRAINING = "training"
    IDLE = "idle"  # the last run promoted a version or was gated out
    WAITING = "waiting"  # for labels, or for a change after a failed or skipped run


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    result: str
    reasons: tuple[str, ...]
    version: str | None
    finished_at: float
    labels: int

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSummary:
        return cls(
            run_id=str(data.get("run_id", "")),
            result=str(data.get("result", "")),
            reasons=tuple(str(r) for r in data.get("reasons", ())),
            version=data.get("version") or None,
            finished_at=float(data.get("finished_at", 0.0)),
            labels=int(data.get("labels", 0)),
        )


@dataclass(frozen=True, slots=True)
class TrainerReport:
    """What the trainer writes into the store (and reads back: its label cursor lives
    here, so every trainer replica on the store shares it)."""

    state: TrainerState
    activity: str  # what it does now, or the last run's outcome, in words
    last_run: RunSummary | None = None
    waiting_classes: Mapping[str, str] = field(default_factory=dict)
    # Labels up to this sequence number trained a promoted or gated run ...
    trained_label_seq: int = 0
    # ... and up to this one were tried by the last run, whatever its result.
    attempted_label_seq: int = 0
    min_new_labels: int = 0
    train_every_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "activity": self.activity,
            "last_run": self.last_run.to_json() if self.last_run else None,
            "waiting_classes": dict(self.waiting_classes),
            "trained_label_seq": self.trained_label_seq,
            "attempted_label_seq": self.attempted_label_seq,
            "min_new_labels": self.min_new_labels,
            "train_every_seconds": self.train_every_seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainerReport:
        last = data.get("last_run")
        every = data.get("train_every_seconds")
        return cls(
            state=TrainerState(data.get("state", TrainerState.UNKNOWN)),
            activity=str(data.get("activity", "")),
            last_run=RunSummary.from_json(last) if isinstance(last, Mapping) else None,
            waiting_classes={str(k): str(v) for k, v in data.get("waiting_classes", {}).items()},
            trained_label_seq=int(data.get("trained_label_seq", 0)),
            attempted_label_seq=int(data.get("attempted_label_seq", 0)),
            min_new_labels=int(data.get("min_new_labels", 0)),
            train_every_seconds=float(every) if every else None,
        )

    @classmethod
    def read(cls, store: FeedbackStore) -> tuple[TrainerReport, float] | None:
        stored = store.trainer_status()
        return (cls.from_json(stored[0]), stored[1]) if stored else None


@dataclass(frozen=True, slots=True)
class TrainingStatus:
    """The answer of GetTrainingStatus."""

    state: TrainerState
    detail: str
    updated_at: float
    stale: bool
    last_run: RunSummary | None
    waiting_classes: Mapping[str, str]
    new_labels: int
    next_trigger: str

    @classmethod
    def of(cls, store: FeedbackStore, now: float | None = None) -> TrainingStatus:
        """The trainer's last report, completed with the store's current counts."""
        now = time.time() if now is None else now
        stored = TrainerReport.read(store)
        if stored is None:
            return cls(
                TrainerState.UNKNOWN,
                "no trainer has reported on this store: start `tlserve-trainer run` with the "
                "same TLSERVE_STORE_URL (or data dir) as the server",
                0.0,
                True,
                None,
                {},
                store.labels_since(0),
                "a running trainer",
            )
        report, updated_at = stored
        stale = now - updated_at > STALE_AFTER_SECONDS
        new_labels = store.labels_since(report.attempted_label_seq)
        since_trained = store.labels_since(report.trained_label_seq)
        pending = store.pending_training_requests()
        next_trigger = _next_trigger(report, pending, new_labels, since_trained)
        detail = report.activity
        if report.state != TrainerState.TRAINING:
            detail = f"{detail}; next run: {next_trigger}"
        if stale:
            detail = (
                f"the trainer last reported {now - updated_at:.0f}s ago (is tlserve-trainer "
                f"running?); then: {detail}"
            )
        return cls(
            report.state,
            detail,
            updated_at,
            stale,
            report.last_run,
            report.waiting_classes,
            new_labels,
            next_trigger,
        )


def _next_trigger(
    report: TrainerReport, pending: list[tuple[int, str]], new_labels: int, since_trained: int
) -> str:
    if pending:
        return f"now: {len(pending)} training request(s) pending"
    if report.state == TrainerState.TRAINING:
        return "when the run in progress ends"
    if new_labels == 0:
        return (
            "when labels change (the last run saw every label) or on TriggerTraining"
            if report.last_run
            else "when labels arrive"
        )
    short = max(0, report.min_new_labels - since_trained)
    trigger = (
        f"after {short} more label(s) ({since_trained} of {report.min_new_labels} new)"
        if short
        else "at the trainer's next poll"
    )
    if short and report.train_every_seconds:
        trigger += f", or on its {report.train_every_seconds:.0f}s timer"
    return trigger
