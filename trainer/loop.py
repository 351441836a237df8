"""The trainer loop: train when enough new labels arrived, on a timer, or on request;
one run at a time, across processes and pods (the store's training lock)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from tlserve.server.fsutil import atomic_write_bytes
from tlserve.server.registry import Registry
from tlserve.server.store.base import FeedbackStore
from tlserve.trainer.metrics import TrainerMetrics
from tlserve.trainer.pipeline import RunRecord, RunResult, Trainer
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
        self.state_path = settings.data_dir / "trainer" / "state.json"
        self._last_run_at = 0.0

    def state(self) -> dict[str, Any]:
        if self.state_path.is_file():
            return json.loads(self.state_path.read_text())  # type: ignore[no-any-return]
        return {"trained_label_seq": 0}

    def due(self) -> str | None:
        """Why a run is due now, or None."""
        requests = self.store.pending_training_requests()
        if requests:
            return "requested: " + "; ".join(reason for _, reason in requests)
        trained = int(self.state().get("trained_label_seq", 0))
        newest = self.store.last_label_seq()
        new_labels = self.store.labels_since(trained)
        if new_labels >= self.settings.min_new_labels:
            return f"{new_labels} new labels"
        every = self.settings.train_every_seconds
        if every and newest > trained and time.monotonic() - self._last_run_at >= every:
            return f"timer ({every:.0f}s) with {new_labels} new labels"
        return None

    def run_once(self, reason: str) -> RunRecord:
        with self.store.training_lock():
            requests = [request_id for request_id, _ in self.store.pending_training_requests()]
            record = self.trainer.run_once(reason)
            self.store.mark_training_requests(requests, record.run_id)
            if self.metrics is not None:
                self.metrics.observe(record)
            self._last_run_at = time.monotonic()
            if record.result in (RunResult.PROMOTED, RunResult.REJECTED):
                state = {**self.state(), "trained_label_seq": record.label_seq}
                atomic_write_bytes(self.state_path, json.dumps(state, indent=2).encode())
            if record.result == RunResult.PROMOTED:
                self.registry.retain(self.settings.keep_versions)
        return record

    def run_forever(self, stop: Any = None) -> None:
        """Poll until `stop` (a threading.Event) is set."""
        while stop is None or not stop.is_set():
            try:
                reason = self.due()
                if reason:
                    self.run_once(reason)
            except Exception:
                log.exception("trainer loop iteration failed; retrying")
            if stop is not None:
                stop.wait(self.settings.poll_seconds)
            else:
                time.sleep(self.settings.poll_seconds)
