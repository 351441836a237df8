"""Prometheus metrics of the server, registered on an injected CollectorRegistry."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """Every metric the serving path records; one instance per server."""

    def __init__(self, registry: CollectorRegistry) -> None:
        add_process_collectors(registry)
        self.registry = registry
        self.requests = Counter(
            "tlserve_requests",
            "Requests handled, by protocol (grpc, http), method and status code.",
            ["protocol", "method", "code"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "tlserve_request_duration_seconds",
            "Request latency, by protocol (grpc, http), method and status code.",
            ["protocol", "method", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "tlserve_requests_in_flight",
            "Requests being handled now, by protocol and method.",
            ["protocol", "method"],
            registry=registry,
        )
        self.queue_wait_seconds = Histogram(
            "tlserve_batch_queue_wait_seconds",
            "Time images wait in the batching queue before their batch starts.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "tlserve_batch_queue_images",
            "Images waiting in the batching queue.",
            registry=registry,
        )
        self.batch_size = Histogram(
            "tlserve_batch_size",
            "Images per inference batch.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.decode_seconds = Histogram(
            "tlserve_image_decode_seconds",
            "Time to decode and resize one image.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "tlserve_inference_seconds",
            "Inference time of one batch, by stage (backbone, head).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_info = Gauge(
            "tlserve_model_info",
            "Each model's served version (value 1), with its backbone and execution provider.",
            ["model", "version", "backbone", "provider"],
            registry=registry,
        )
        self.model_swaps = Counter(
            "tlserve_model_swaps",
            "Model version changes by model and result: full, head_only (swapped) or refused.",
            ["model", "result"],
            registry=registry,
        )
        self.model_load_seconds = Histogram(
            "tlserve_model_load_seconds",
            "Time to load, verify and warm a version before it is swapped in, by model.",
            ["model"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.feedback_to_serve = Histogram(
            "tlserve_feedback_to_serve_seconds",
            "From the newest label a version was trained on being acknowledged to that version "
            "answering on this server, by model.",
            ["model"],
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=registry,
        )
        self.current_problems = Counter(
            "tlserve_registry_current_problems",
            "Times the registry's CURRENT became unusable (empty, not UTF-8, not a version id); "
            "each distinct problem counts once.",
            registry=registry,
        )
        self.rejected_images = Counter(
            "tlserve_rejected_images",
            "Images refused before inference, by reason (invalid, too_large).",
            ["reason"],
            registry=registry,
        )

        self.feedback = Counter(
            "tlserve_feedback",
            "Feedback submissions by model and result: accepted, duplicate (idempotent "
            "replay), rejected.",
            ["model", "result"],
            registry=registry,
        )
        self.live_feedback = Counter(
            "tlserve_live_feedback",
            "Feedback on kept predictions by model, version (that answered) and outcome.",
            ["model", "version", "outcome"],
            registry=registry,
        )
        self.live_accuracy = Gauge(
            "tlserve_live_accuracy",
            "Share of a version's answers that feedback confirmed (from the store, all replicas).",
            ["model", "version"],
            registry=registry,
        )
        self.dropped_predictions = Counter(
            "tlserve_kept_predictions_dropped",
            "Predictions not kept, by reason: rate_limit (keep_max_per_second), store_behind, "
            "unstorable (the store refused the row).",
            ["reason"],
            registry=registry,
        )

        self.loop_lag_seconds = Histogram(
            "tlserve_event_loop_lag_seconds",
            "How late the event loop ran a timer: time during which no request was served.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )

    def observe_request(self, protocol: str, method: str, code: str, seconds: float) -> None:
        self.requests.labels(protocol=protocol, method=method, code=code).inc()
        self.request_seconds.labels(protocol=protocol, method=method, code=code).observe(seconds)

    def forget_versions_except(self, model: str, keep: set[str]) -> None:
        """Drop a model's per-version series of versions no longer served (kept: the served
        one and the one it replaced), so a long-lived server does not grow a series per
        version; other models' series stay."""
        self._forget(model, lambda version: version not in keep)

    def forget_model(self, model: str) -> None:
        """Drop every series of a model that is no longer served."""
        self._forget(model, lambda _version: True)
        everything = (self.model_swaps, self.model_load_seconds, self.feedback_to_serve)
        self._forget(model, lambda _version: True, (*everything, self.feedback))

    def set_served_model(
        self, model: str, version: str, backbone_id: str, providers: list[str]
    ) -> None:
        self._forget(model, lambda _version: True, (self.model_info,))
        provider = providers[0] if providers else "unknown"
        self.model_info.labels(
            model=model, version=version, backbone=backbone_id[:12], provider=provider
        ).set(1)

    def _forget(
        self,
        model: str,
        doomed: Callable[[str], bool],
        metrics: Sequence[Gauge | Counter | Histogram] | None = None,
    ) -> None:
        for metric in metrics or (self.live_accuracy, self.live_feedback, self.model_info):
            names = metric._labelnames  # prometheus_client has no public getter
            present = {
                tuple(sample.labels[name] for name in names)
                for family in metric.collect()
                for sample in family.samples
                if sample.labels.get("model") == model and doomed(sample.labels.get("version", ""))
            }
            for labels in present:
                metric.remove(*labels)


def add_process_collectors(registry: CollectorRegistry) -> None:
    """process_* (CPU, memory, open files), python_info and python_gc_* on an injected
    registry: prometheus_client puts them on its default registry only."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
