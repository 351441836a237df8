"""Prometheus series of every served version's live monitoring, read at scrape time: the
monitors hold the numbers, so there is nothing to keep in step or forget on a swap."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tlserve.server.monitoring.live import DriftVerdict, VersionMonitor


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
