"""A ModelInfer pinned to a version is answered by that version or refused NOT_FOUND, never
by another version, even when a swap lands between the pin check and inference."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from examples.colour_model import publish_colour_version
from tests.support import ServerThread, http_call, solid_image
from tlserve.proto import grpc_predict_v2_pb2 as kpb
from tlserve.proto import grpc_predict_v2_pb2_grpc as kpb_grpc
from tlserve.server.api.tensors import decode_bytes_elements, encode_bytes_elements
from tlserve.server.registry import Registry

FRENCH = {"red": "rouge", "green": "vert", "blue": "bleu"}


def pinned_infer(server: ServerThread, protocol: str, version: str) -> tuple[str, str]:
    """(status, "version:label") of a ModelInfer for a red image pinned to `version`."""
    image = solid_image("red")
    if protocol == "grpc":
        request = kpb.ModelInferRequest(
            model_name="tlserve",
            model_version=version,
            inputs=[
                kpb.ModelInferRequest.InferInputTensor(name="IMAGE", datatype="BYTES", shape=[1])
            ],
            raw_input_contents=[encode_bytes_elements([image])],
            outputs=[kpb.ModelInferRequest.InferRequestedOutputTensor(name="LABEL")],
        )
        with grpc.insecure_channel(server.target) as channel:
            try:
                response = kpb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                    request, timeout=30
                )
            except grpc.RpcError as error:
                return error.code().name, ""
        (label,) = decode_bytes_elements(response.raw_output_contents[0], 1)
        return "OK", f"{response.model_version}:{label.decode()}"
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "IMAGE",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(image) + 4},
                }
            ],
            "outputs": [{"name": "LABEL"}],
        }
    ).encode()
    reply = http_call(
        f"{server.http_url}/v2/models/tlserve/versions/{version}/infer",
        "POST",
        header + encode_bytes_elements([image]),
        {"Inference-Header-Content-Length": str(len(header))},
    )
    if reply.status != 200:
        return {404: "NOT_FOUND"}.get(reply.status, str(reply.status)), ""
    document = reply.json()
    return "OK", f"{document['model_version']}:{document['outputs'][0]['data'][0]}"


def two_versions(tmp_path: Path) -> tuple[Registry, str, str]:
    """`english` (served) and `french`: the same backbone, heads that answer in different words."""
    registry = Registry.local(tmp_path / "registry")
    english = publish_colour_version(registry)
    french = publish_colour_version(
        registry, labels=list(FRENCH.values()), answer_for=FRENCH, make_current=False
    )
    return registry, english, french


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_swap_after_the_pin_check_does_not_change_the_answer(
    tmp_path: Path, protocol: str
) -> None:
    registry, english, french = two_versions(tmp_path)
    server = ServerThread(tmp_path, decode_threads=1, registry_poll_seconds=3600).start()
    assert server.server is not None
    slot = server.server.slot
    try:
        # Occupy the only decode thread: the pinned request passes its version check
        # under its lease, then waits for decoding while the version is swapped.
        decoding = threading.Event()
        server.server.predictions._decode_executor.submit(decoding.wait)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(pinned_infer, server, protocol, english)
            deadline = time.monotonic() + 10
            while slot.require().leases < 1:
                assert time.monotonic() < deadline, "the pinned request never took its lease"
                time.sleep(0.005)
            registry.set_current(french)
            assert server.run(slot.refresh())
            assert slot.require().version == french
            decoding.set()
            assert answer.result(30) == ("OK", f"{english}:red")
        assert pinned_infer(server, protocol, english) == ("NOT_FOUND", "")
        assert pinned_infer(server, protocol, french) == ("OK", f"{french}:rouge")
    finally:
        server.stop()


@pytest.mark.slow  # seconds of load
def test_pinned_requests_during_continuous_swaps_are_never_misanswered(tmp_path: Path) -> None:
    registry, english, french = two_versions(tmp_path)
    server = ServerThread(tmp_path, registry_poll_seconds=3600).start()
    assert server.server is not None
    slot = server.server.slot
    stop = threading.Event()
    swaps = 0

    def keep_swapping() -> None:
        nonlocal swaps
        while not stop.is_set():
            for version in (french, english):
                registry.set_current(version)
                server.run(slot.refresh())
                swaps += 1

    def ask(protocol: str) -> Counter[tuple[str, str]]:
        seen: Counter[tuple[str, str]] = Counter()
        while not stop.is_set():
            seen[pinned_infer(server, protocol, english)] += 1
        return seen

    try:
        with ThreadPoolExecutor(5) as pool:
            swapper = pool.submit(keep_swapping)
            askers = [pool.submit(ask, p) for p in ("grpc", "grpc", "http", "http")]
            time.sleep(3.0)
            stop.set()
            swapper.result(30)
            outcomes = sum((a.result(30) for a in askers), Counter())
    finally:
        stop.set()
        server.stop()
    assert swaps >= 20
    assert set(outcomes) <= {("OK", f"{english}:red"), ("NOT_FOUND", "")}, outcomes
    assert outcomes[("OK", f"{english}:red")] > 0 and outcomes[("NOT_FOUND", "")] > 0
