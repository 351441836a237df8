"""Prometheus series of every served version's live monitoring, read at scrape time: the
monitors hold the numbers, so there is nothing to keep in step or forget on a swap."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tlserve.server.monitoring.live import DriftVerdict, VersionMonitor

if TYPE_CHECKING:
    from tlserve.server.experiments import ExperimentReport


class MonitoringCollector(Collector):
    """`served` lists (model, version, monitor) for every served version."""

    def __init__(self, served: Callable[[], Iterable[tuple[str, str, VersionMonitor]]]) -> None:
        self._served = served

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["model", "version"]
        estimated = GaugeMetricFamily(
            "tlserve_estimated_accuracy",
            "Expected accuracy of the version's recent answers from calibrated confidence "
            "(no labels needed).",
            labels=labels,
        )
        estimated_from = GaugeMetricFamily(
            "tlserve_estimated_accuracy_predictions",
            "Answers the accuracy estimate averages over.",
            labels=labels,
        )
        p_value = GaugeMetricFamily(
            "tlserve_drift_p_value",
            "p value of the last drift test of live features against the training features "
            "(small: the traffic no longer looks like the training data).",
            labels=labels,
        )
        alarm = GaugeMetricFamily(
            "tlserve_drift_alarm",
            "1 while the last drift test is below TLSERVE_DRIFT_ALPHA, else 0.",
            labels=labels,
        )
        for model, version, monitor in self._served():
            report = monitor.report()
            if report.estimate.predictions:
                estimated.add_metric([model, version], report.estimate.expected_accuracy)
                estimated_from.add_metric([model, version], report.estimate.predictions)
            if report.drift is not None and report.drift.p_value is not None:
                p_value.add_metric([model, version], report.drift.p_value)
                drifting = report.drift_verdict == DriftVerdict.DRIFT
                alarm.add_metric([model, version], float(drifting))
        yield from (estimated, estimated_from, p_value, alarm)


class ExperimentCollector(Collector):
    """Each model's running experiment, as last judged: `running` lists (model, report)."""

    def __init__(self, running: Callable[[], Iterable[tuple[str, ExperimentReport]]]) -> None:
        self._running = running

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["model", "champion", "challenger", "rollout"]
        pairs = GaugeMetricFamily(
            "tlserve_experiment_pairs",
            "Labeled predictions both heads of the running experiment scored, by outcome: "
            "win (only the challenger right), loss (only the champion), tie.",
            labels=[*labels, "outcome"],
        )
        p_better = GaugeMetricFamily(
            "tlserve_experiment_p_better",
            "Always-valid p value of 'the challenger is no better' (promoted below alpha/2).",
            labels=labels,
        )
        for model, report in self._running():
            experiment, evidence = report.experiment, report.evidence
            key = [model, experiment.champion, experiment.challenger, str(experiment.mode)]
            if evidence is None:
                continue
            ties = evidence.pairs - evidence.wins - evidence.losses
            outcomes = {"win": evidence.wins, "loss": evidence.losses, "tie": ties}
            for outcome, count in outcomes.items():
                pairs.add_metric([*key, outcome], count)
            p_better.add_metric(key, evidence.p_better)
        yield from (pairs, p_better)
