"""Prometheus metrics of the trainer, on an injected CollectorRegistry."""

from __future__ import annotations

import copy

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tlserve.server.metrics import add_process_collectors
from tlserve.server.training_status import TrainerReport, TrainerState
from tlserve.trainer.pipeline import PUBLISHED, RunRecord


class TrainerMetrics:
    """Every series carries `model` (the trainer's models: `tlserve` for the default, each
    named model by its name); `for_model` gives the view one model's loop reports to."""

    def __init__(self, registry: CollectorRegistry, model: str = "tlserve") -> None:
        self.registry = registry
        self.model = model
        add_process_collectors(registry)
        self.runs = Counter(
            "tlserve_trainer_runs",
            "Training runs by result: promoted, rejected (gate), skipped (data), failed.",
            ["model", "result"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "tlserve_trainer_stage_seconds",
            "Duration of each stage of a run (snapshot, backbone, features, train, export, "
            "evaluate, publish).",
            ["model", "stage"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
            registry=registry,
        )
        self.holdout_accuracy = Gauge(
            "tlserve_trainer_holdout_accuracy",
            "Holdout accuracy of the version the trainer last promoted.",
            ["model"],
            registry=registry,
        )
        self.feedback_to_serve = Histogram(
            "tlserve_trainer_feedback_to_publish_seconds",
            "From the newest label in a run being acknowledged to its version becoming CURRENT.",
            ["model"],
            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=registry,
        )
        self.state = Gauge(
            "tlserve_trainer_state",
            "1 for the state the trainer is in (training, idle, waiting), 0 for the others.",
            ["model", "state"],
            registry=registry,
        )
        self.waiting_classes = Gauge(
            "tlserve_trainer_waiting_classes",
            "Labeled classes that do not train yet (quarantined or too few samples).",
            ["model"],
            registry=registry,
        )

    def for_model(self, model: str) -> TrainerMetrics:
        """The same series, reported for `model`."""
        view = copy.copy(self)
        view.model = model
        return view

    def report(self, report: TrainerReport) -> None:
        model = self.model
        for state in TrainerState:
            if state != TrainerState.UNKNOWN:
                value = 1 if state == report.state else 0
                self.state.labels(model=model, state=state.value).set(value)
        self.waiting_classes.labels(model=model).set(len(report.waiting_classes))

    def observe(self, record: RunRecord) -> None:
        model = self.model
        self.runs.labels(model=model, result=record.result).inc()
        for stage, seconds in record.timings.items():
            self.stage_seconds.labels(model=model, stage=stage).observe(seconds)
        if record.result in PUBLISHED:
            accuracy = record.metrics.get("holdout", {}).get("accuracy")
            if accuracy is not None:
                self.holdout_accuracy.labels(model=model).set(accuracy)
            if record.published_at and record.newest_label_at:
                self.feedback_to_serve.labels(model=model).observe(
                    record.published_at - record.newest_label_at
                )
