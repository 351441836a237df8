"""The trainer loop: train when enough new labels arrived, on a timer, or on request;
one run at a time, across processes and pods (the store's training lock). It reports
what it does and waits for into the store (tlserve.server.training_status), where
every server reads it; a run that was skipped or failed is not retried until the
labels change or someone asks for a run."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from tlserve.server.registry import Registry
from tlserve.server.store.base import FeedbackStore
from tlserve.server.training_status import (
    HEARTBEAT_SECONDS,
    RunSummary,
    TrainerReport,
    TrainerState,
)
from tlserve.trainer.metrics import TrainerMetrics
from tlserve.trainer.pipeline import PUBLISHED, RunRecord, RunResult, Trainer
from tlserve.trainer.settings import TrainerSettings

log = logging.getLogger(__name__)


class TrainerLoop:
    def __init__(
        self,
        settings: TrainerSettings,
        store: FeedbackStore,
        registry: Registry,
        metrics: TrainerMetrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.settings = settings
        self.store = store
        self.registry = registry
        self.trainer = Trainer(settings, store, registry)
        self._last_run_at = 0.0
        self._reported_at = 0.0

    def report(self) -> TrainerReport:
        """The last report on this store (any trainer replica's), or a fresh one."""
        stored = TrainerReport.read(self.store)
        if stored is not None:
            return stored[0]
        return TrainerReport(TrainerState.WAITING, "started; no run yet")

    def _write(self, report: TrainerReport) -> None:
        report = replace(
            report,
            min_new_labels=self.settings.min_new_labels,
            train_every_seconds=self.settings.train_every_seconds,
        )
        self.store.put_trainer_status(report.to_json())
        self._reported_at = time.monotonic()
        if self.metrics is not None:
            self.metrics.report(report)

    def due(self) -> str | None:
        """Why a run is due now, or None."""
        requests = self.store.pending_training_requests()
        if requests:
            return "requested: " + "; ".join(reason for _, reason in requests)
        report = self.report()
        newest = self.store.last_label_seq()
        if newest <= report.attempted_label_seq:
            return None  # the last run saw exactly these labels, whatever came of it
        new_labels = self.store.labels_since(report.trained_label_seq)
        if new_labels >= self.settings.min_new_labels:
            return f"{new_labels} new labels"
        every = self.settings.train_every_seconds
        if every and time.monotonic() - self._last_run_at >= every:
            return f"timer ({every:.0f}s) with {new_labels} new labels"
        return None

    def run_once(self, reason: str) -> RunRecord:
        """One run now, whatever is due."""
        with self.store.training_lock():
            return self._run_locked(reason)

    def run_if_due(self) -> RunRecord | None:
        """A run if one is still due once this replica holds the training lock; None when
        another replica ran on these labels meanwhile (so two trainers train once)."""
        with self.store.training_lock():
            reason = self.due()
            return self._run_locked(reason) if reason else None

    def _run_locked(self, reason: str) -> RunRecord:
        before = self.report()
        requests = [request_id for request_id, _ in self.store.pending_training_requests()]
        newest = self.store.last_label_seq()
        self._write(replace(before, state=TrainerState.TRAINING, activity=f"training ({reason})"))
        record = self.trainer.run_once(reason)
        self.store.mark_training_requests(requests, record.run_id)
        if self.metrics is not None:
            self.metrics.observe(record)
        self._last_run_at = time.monotonic()
        trained = before.trained_label_seq
        if record.result in (*PUBLISHED, RunResult.REJECTED):
            trained = record.label_seq
        self._write(
            TrainerReport(
                state=_state_after(record),
                activity=_outcome(record),
                last_run=RunSummary(
                    run_id=record.run_id,
                    result=record.result.value,
                    reasons=tuple(record.reasons),
                    version=record.version,
                    finished_at=time.time(),
                    labels=int(record.dataset.get("train", 0) + record.dataset.get("holdout", 0)),
                ),
                waiting_classes=record.dataset.get("waiting", {}),
                trained_label_seq=trained,
                attempted_label_seq=max(newest, record.label_seq),
            )
        )
        if record.result in PUBLISHED:
            self.registry.retain(self.settings.keep_versions)
        return record

    def run_forever(self, stop: Any = None) -> None:
        """Poll until `stop` (a threading.Event) is set."""
        while stop is None or not stop.is_set():
            try:
                if self.due():  # checked without the lock first: polling stays cheap
                    self.run_if_due()
                elif time.monotonic() - self._reported_at >= HEARTBEAT_SECONDS:
                    self._write(self.report())  # the heartbeat: "still here"
            except Exception:
                log.exception("trainer loop iteration failed; retrying")
            if stop is not None:
                stop.wait(self.settings.poll_seconds)
            else:
                time.sleep(self.settings.poll_seconds)


def _state_after(record: RunRecord) -> TrainerState:
    if record.result in (*PUBLISHED, RunResult.REJECTED):
        return TrainerState.IDLE
    return TrainerState.WAITING


def _outcome(record: RunRecord) -> str:
    """The last run, in words; the state (idle, waiting) is said beside it, not in it
    (`tlserve status` printed "trainer: idle: idle: run ...")."""
    why = "; ".join(record.reasons)
    match record.result:
        case RunResult.PROMOTED:
            return f"last run {record.run_id} promoted {record.version} ({why})"
        case RunResult.CHALLENGER:
            return f"last run {record.run_id} published {record.version} as challenger ({why})"
        case RunResult.REJECTED:
            return f"last run {record.run_id} was refused by the promotion gate ({why})"
        case RunResult.SKIPPED:
            return f"last run {record.run_id} skipped, waiting for labels: {why}"
        case _:
            return f"last run {record.run_id} failed: {why}"
