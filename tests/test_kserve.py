"""The Open Inference Protocol (KServe v2): tritonclient end to end, and bad requests."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from tests.support import ServerThread, run_triton_probe, solid_image
from tlserve.proto import grpc_predict_v2_pb2 as pb
from tlserve.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from tlserve.server.api.tensors import encode_bytes_elements


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tritonclient_against_tlserve(served: ServerThread, protocol: str) -> None:
    address = served.target if protocol == "grpc" else served.http_url.removeprefix("http://")
    completed = run_triton_probe(protocol, address, "tlserve")
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    version = served.registry.current()
    assert report["server_live"] and report["server_ready"] and report["model_ready"]
    metadata = report["metadata"]
    assert metadata["name"] == "tlserve" and metadata["versions"] == [version]
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("IMAGE", "BYTES"),
        ("PIXELS", "UINT8"),
    ]
    assert metadata["inputs"][1]["shape"] == [-1, 32, 32, 3]
    assert metadata["outputs"][0]["shape"] == [-1, 3]
    assert report["server_metadata"]["name"] == "tlserve"
    assert report["bytes_labels"] == ["red", "blue", "green"]
    assert report["bytes_probabilities_shape"] == [3, 3]
    assert report["bytes_version"] == version and report["bytes_request_id"] == "req-1"
    assert report["uint8_labels"] == ["red", "blue", "green"]
    assert report["uint8_argmax"] == [0, 2, 1]
    assert report["uint8_row_sums"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert [row[0].split(":")[1:] for row in report["classification"]] == [
        ["0", "red"],
        ["2", "blue"],
        ["1", "green"],
    ]
    assert all(len(row) == 2 for row in report["classification"])
    expected_status = {"grpc": "StatusCode.NOT_FOUND", "http": "404"}[protocol]
    assert report["unknown_model_error"]["status"] == expected_status
    assert "no-such-model" in report["unknown_model_error"]["message"]


def _infer(target: str, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    with grpc.insecure_channel(target) as channel:
        return pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)


def _bytes_input(images: list[bytes]) -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(
        name="IMAGE", datatype="BYTES", shape=[len(images)]
    )


def test_contents_instead_of_raw(served: ServerThread) -> None:
    tensor = _bytes_input([b"", b""])
    tensor.contents.bytes_contents.extend([solid_image("green"), solid_image("red")])
    response = _infer(served.target, pb.ModelInferRequest(model_name="tlserve", inputs=[tensor]))
    labels = response.outputs[1]
    assert labels.name == "LABEL" and labels.shape == [2]
    assert response.raw_output_contents[1] == encode_bytes_elements([b"green", b"red"])
    probabilities = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 3)
    assert probabilities.argmax(axis=1).tolist() == [1, 0]


def test_model_ready_for_versions(served: ServerThread) -> None:
    with grpc.insecure_channel(served.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        current = served.registry.current()
        assert stub.ModelReady(pb.ModelReadyRequest(name="tlserve", version=current)).ready
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelReady(pb.ModelReadyRequest(name="tlserve", version="20990101-000000-000000"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_not_ready_before_a_model(empty_server: ServerThread) -> None:
    with grpc.insecure_channel(empty_server.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        assert not stub.ServerReady(pb.ServerReadyRequest()).ready
        assert not stub.ModelReady(pb.ModelReadyRequest(name="tlserve")).ready
