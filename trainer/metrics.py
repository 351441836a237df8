"""Prometheus metrics of the trainer, on an injected CollectorRegistry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tlserve.server.metrics import add_process_collectors
from tlserve.server.training_status import TrainerReport, TrainerState
from tlserve.trainer.pipeline import RunRecord, RunResult


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        add_process_collectors(registry)
        self.runs = Counter(
            "tlserve_trainer_runs",
            "Training runs by result: promoted, rejected (gate), skipped (data), failed.",
            ["result"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "tlserve_trainer_stage_seconds",
            "Duration of each stage of a run (snapshot, backbone, features, train, export, "
            "evaluate, publish).",
            ["stage"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
            registry=registry,
        )
        self.holdout_accuracy = Gauge(
            "tlserve_trainer_holdout_accuracy",
            "Holdout accuracy of the version the trainer last promoted.",
            registry=registry,
        )
        self.feedback_to_serve = Histogram(
            "tlserve_trainer_feedback_to_publish_seconds",
            "From the newest label in a run being acknowledged to its version becoming CURRENT.",
            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=registry,
        )
        self.state = Gauge(
            "tlserve_trainer_state",
            "1 for the state the trainer is in (training, idle, waiting), 0 for the others.",
            ["state"],
            registry=registry,
        )
        self.waiting_classes = Gauge(
            "tlserve_trainer_waiting_classes",
            "Labeled classes that do not train yet (quarantined or too few samples).",
            registry=registry,
        )

    def report(self, report: TrainerReport) -> None:
        for state in TrainerState:
            if state != TrainerState.UNKNOWN:
                self.state.labels(state=state.value).set(1 if state == report.state else 0)
        self.waiting_classes.set(len(report.waiting_classes))

    def observe(self, record: RunRecord) -> None:
        self.runs.labels(result=record.result).inc()
        for stage, seconds in record.timings.items():
            self.stage_seconds.labels(stage=stage).observe(seconds)
        if record.result == RunResult.PROMOTED:
            accuracy = record.metrics.get("holdout", {}).get("accuracy")
            if accuracy is not None:
                self.holdout_accuracy.set(accuracy)
            if record.published_at and record.newest_label_at:
                self.feedback_to_serve.observe(record.published_at - record.newest_label_at)
