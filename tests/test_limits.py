"""Limits checked before anything big is allocated, on a real server: the reproducers of
the hostile-input issue (counts far past the limits, in small messages), each refused
with RESOURCE_EXHAUSTED / 413 and a reason; the event-loop lag metric; request ids."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import grpc
import pytest

from examples.colour_model import publish_colour_version
from tests.support import ServerThread, http_call, scrape, solid_image, value
from tlserve.proto import classifier_pb2 as pb
from tlserve.proto import grpc_predict_v2_pb2 as kpb
from tlserve.server.registry import Registry


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    data = tmp_path_factory.mktemp("limits")
    publish_colour_version(Registry.local(data / "registry"))
    running = ServerThread(
        data, max_images_per_request=8, max_stream_items=100, max_json_bytes=64 * 1024
    ).start()
    yield running
    running.stop()


def _grpc_error(target: str, method: str, payload: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(method)(payload, timeout=30)
    return refused.value


def test_a_million_tiny_images_are_counted_not_decoded(server: ServerThread) -> None:
    request = pb.PredictRequest(images=[pb.Image(encoded=b"x")] * 1_000_000)
    started = time.perf_counter()
    error = _grpc_error(
        server.target, "/tlserve.v1.Classifier/Predict", request.SerializeToString()
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "more than 8 images" in (error.details() or "")
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    "method", ["/tlserve.v1.Classifier/Predict", "/inference.GRPCInferenceService/ModelInfer"]
)
def test_a_flood_of_unknown_fields_is_refused_by_its_field_count(
    server: ServerThread, method: str
) -> None:
    """A million two-byte unknown fields (field 15, varint 0): scanning them all was a
    million steps of Python on the event loop per request (30 million for 60 MB, which
    held the loop for minutes); the scan stops past what a request can need."""
    flood = b"\x78\x00" * 1_000_000
    error = _grpc_error(server.target, method, flood)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "top-level fields" in (error.details() or "")


def test_many_bytes_elements_are_refused_by_their_declared_batch(server: ServerThread) -> None:
    count = 2_000_000
    request = kpb.ModelInferRequest(model_name="tlserve")
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[count])
    request.raw_input_contents.append(b"\x01\x00\x00\x00x" * count)
    error = _grpc_error(
        server.target, "/inference.GRPCInferenceService/ModelInfer", request.SerializeToString()
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"has {count} images; at most 8" in (error.details() or "")


def test_more_bytes_elements_than_the_shape_declares(server: ServerThread) -> None:
    request = kpb.ModelInferRequest(model_name="tlserve")
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x01\x00\x00\x00x" * 100_000)
    error = _grpc_error(
        server.target, "/inference.GRPCInferenceService/ModelInfer", request.SerializeToString()
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than the 1 elements its shape declares" in (error.details() or "")


def test_a_long_feedback_stream_is_answered_for_what_was_read(server: ServerThread) -> None:
    item = pb.SubmitFeedbackRequest(label="red", image=pb.Image(encoded=solid_image("red")))
    with grpc.insecure_channel(server.target) as channel:
        stream = channel.stream_unary(
            "/tlserve.v1.Classifier/StreamFeedback",
            request_serializer=pb.SubmitFeedbackRequest.SerializeToString,
            response_deserializer=pb.StreamFeedbackResponse.FromString,
        )
        response = stream(iter([item] * 20_000), timeout=60)
    assert (response.accepted, response.rejected, len(response.results)) == (100, 1, 101)
    last = response.results[-1]
    assert last.index == 100 and "more than 100 items" in last.error
    assert last.error_code == "RESOURCE_EXHAUSTED"


def test_json_inference_bodies_are_capped_before_parsing(server: ServerThread) -> None:
    body = json.dumps(
        {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": ["x" * 70_000]}]}
    ).encode()
    reply = http_call(
        f"{server.http_url}/v2/models/tlserve/infer",
        "POST",
        body,
        {"Content-Type": "application/json"},
    )
    assert reply.status == 413 and "binary data" in reply.json()["error"]


def test_refusals_are_one_log_line_with_the_request_id(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tlserve.server.api")
    request = pb.PredictRequest(images=[pb.Image(encoded=b"junk")])
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary("/tlserve.v1.Classifier/Predict")
        with pytest.raises(grpc.RpcError) as refused:
            call(request.SerializeToString(), metadata=(("x-request-id", "req-42"),), timeout=5)
    assert dict(refused.value.trailing_metadata() or ())["x-request-id"] == "req-42"
    lines = [r for r in caplog.records if "req-42" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "INVALID_ARGUMENT" in lines[0].getMessage()
    reply = http_call(f"{server.http_url}/v1/predict", "POST", b"junk", {"X-Request-Id": "h-7"})
    assert reply.status == 400 and reply.headers["X-Request-Id"] == "h-7"


def test_the_event_loop_lag_is_measured(server: ServerThread) -> None:
    time.sleep(0.2)
    samples = scrape(server)
    assert value(samples, "tlserve_event_loop_lag_seconds_count") > 0
