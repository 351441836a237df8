"""A real Prometheus scrape of /metrics, parsed with prometheus_client's own parser."""

from __future__ import annotations

import contextlib
import time

import grpc

from examples.colour_model import publish_colour_version
from tests.support import ServerThread, scrape, solid_image, value
from tlserve.clients import TlserveClient
from tlserve.proto import classifier_pb2 as pb


def test_metrics_endpoint_reports_the_serving_path(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        for _ in range(3):
            client.predict([solid_image("red"), solid_image("blue")])
        with contextlib.suppress(grpc.RpcError):
            client.stub.Predict(pb.PredictRequest(images=[pb.Image(encoded=b"junk")]), timeout=5)
    # A request is counted as its handler finishes, which may be just after the client
    # has its answer: wait for all four.
    deadline = time.monotonic() + 5
    while True:
        samples = scrape(served)
        counted = value(samples, "tlserve_request_duration_seconds_count", method="Predict")
        if counted >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert (
        value(samples, "tlserve_requests_total", protocol="grpc", method="Predict", code="OK") == 3
    )
    assert (
        value(
            samples,
            "tlserve_requests_total",
            protocol="grpc",
            method="Predict",
            code="INVALID_ARGUMENT",
        )
        == 1
    )
    assert (
        value(samples, "tlserve_request_duration_seconds_count", protocol="grpc", method="Predict")
        == 4
    )
    assert value(samples, "tlserve_batch_size_sum") == 6
    assert value(samples, "tlserve_batch_queue_wait_seconds_count") >= 3
    assert value(samples, "tlserve_image_decode_seconds_count") == 6
    assert value(samples, "tlserve_inference_seconds_count", stage="backbone") >= 1
    assert value(samples, "tlserve_inference_seconds_count", stage="head") >= 1
    assert value(samples, "tlserve_rejected_images_total", reason="invalid") == 1
    assert value(samples, "tlserve_model_swaps_total", result="full") == 1
    info = samples["tlserve_model_info"]
    assert [(labels["version"], labels["provider"], v) for labels, v in info] == [
        (served.registry.current(), "CPUExecutionProvider", 1.0)
    ]
    assert value(samples, "tlserve_requests_in_flight", protocol="grpc", method="Predict") == 0


def test_process_series_and_no_series_for_retired_versions(served: ServerThread) -> None:
    first = served.registry.current()
    assert first is not None
    with TlserveClient(served.target) as client:
        answered = client.predict_one(solid_image("red"))
        client.submit_feedback("red", prediction_id=answered.prediction_id)
        samples = scrape(served)
        assert value(samples, "tlserve_live_accuracy", version=first) == 1.0
        assert value(samples, "process_resident_memory_bytes") > 0
        assert value(samples, "process_cpu_seconds_total") > 0
        assert ("implementation" in samples["python_info"][0][0]) is True
        # Two newer versions: the first is neither served nor the one replaced.
        for _ in range(2):
            version = publish_colour_version(served.registry)
            served.wait_for_version(version)
    samples = scrape(served)
    assert not [
        labels
        for labels, _ in samples.get("tlserve_live_accuracy", [])
        if labels["version"] == first
    ]
    assert not [
        labels
        for labels, _ in samples.get("tlserve_live_feedback_total", [])
        if labels["version"] == first
    ]
