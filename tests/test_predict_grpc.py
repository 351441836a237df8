"""Predict, GetModel and ListModels over real gRPC, with the real client, on a loopback port."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from examples.colour_model import publish_colour_version
from tests.support import ServerThread, http_call, solid_image, solid_pixels, tlserve
from tlserve.clients import AsyncTlserveClient, TlserveClient
from tlserve.proto import classifier_pb2 as pb
from tlserve.server.registry import Registry


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[ServerThread]:
    """A served colour model behind tight limits, to exercise every refusal."""
    publish_colour_version(Registry.local(tmp_path / "registry"))
    server = ServerThread(
        tmp_path,
        max_images_per_request=4,
        max_message_bytes=1_000_000,
        max_image_pixels=250_000,
        max_image_side=2000,
    ).start()
    try:
        yield server
    finally:
        server.stop()


def test_predict_encoded_and_tensor_images(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        result = client.predict(
            [
                solid_image("red"),
                solid_image("green", fmt="JPEG"),
                solid_pixels("blue"),
                solid_pixels("red", 7, 90),
                solid_pixels("green").astype(np.float32),
            ],
            top_k=2,
        )
    assert [p.label for p in result.predictions] == ["red", "green", "blue", "red", "green"]
    assert all(len(p.top) == 2 and p.top[0].score > 0.99 for p in result.predictions)
    assert len({p.prediction_id for p in result.predictions}) == 5
    assert result.model_version == served.registry.current()


def test_default_top_k_is_capped_at_the_label_count(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        prediction = client.predict_one(solid_image("blue"))
    assert prediction.label == "blue" and len(prediction.top) == 3
    assert sum(c.score for c in prediction.top) == pytest.approx(1.0, abs=1e-5)


def test_a_top_k_above_the_label_count_returns_every_label(served: ServerThread) -> None:
    """The README's `--top-k 3` on the demo's 2-class model exited 1 ("accepted 1..2"):
    asking for more labels than a model has returns them all, and every answer says how
    many there are."""
    with TlserveClient(served.target) as client:
        result = client.predict([solid_image("blue")], top_k=99)
    assert result.label_count == 3
    assert [len(p.top) for p in result.predictions] == [3]
    reply = http_call(
        f"{served.http_url}/v1/predict?top_k=99",
        "POST",
        solid_image("red"),
        {"Content-Type": "image/png"},
    )
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["label_count"] == 3 and len(reply.json()["predictions"][0]["top"]) == 3
    shown = tlserve("predict", "--top-k", "99", str(_png_file(served, "red")), target=served.target)
    assert shown.returncode == 0, shown.stderr
    assert "3 labels, all shown" in shown.stdout
    negative = http_call(
        f"{served.http_url}/v1/predict?top_k=-1",
        "POST",
        solid_image("red"),
        {"Content-Type": "image/png"},
    )
    assert negative.status == 400 and "top_k=-1" in negative.json()["error"]


def _png_file(served: ServerThread, colour: str) -> Path:
    path = served.settings.data_dir / f"{colour}.png"
    path.write_bytes(solid_image(colour))
    return path


def test_async_client(served: ServerThread) -> None:
    async def run() -> list[str]:
        async with AsyncTlserveClient(served.target) as client:
            results = await asyncio.gather(
                *(client.predict_one(solid_image(c)) for c in ("red", "green", "blue") * 4)
            )
            return [r.label for r in results]

    assert asyncio.run(run()) == ["red", "green", "blue"] * 4


def test_get_and_list_models(served: ServerThread) -> None:
    first = served.registry.current()
    assert first is not None
    second = publish_colour_version(served.registry, make_current=False)
    with TlserveClient(served.target) as client:
        model = client.get_model()
        assert model.version == first and model.serving
        assert model.labels == ("red", "green", "blue")
        assert model.input_size == (32, 32)
        assert model.execution_providers == ("CPUExecutionProvider",)
        assert model.card["metrics"] == {"holdout_accuracy": 1.0}
        other = client.get_model(second)
        assert other.version == second and not other.serving and other.execution_providers == ()
        models, current = client.list_models()
    assert current == first
    assert [m.version for m in models] == sorted([first, second], reverse=True)
    assert [m.serving for m in models] == [m.version == first for m in models]


def status_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    error = info.value
    return error.code(), error.details()


def test_no_model_yet_then_first_publication(empty_server: ServerThread) -> None:
    channel = grpc.insecure_channel(empty_server.target)
    health = health_pb2_grpc.HealthStub(channel)
    with TlserveClient(empty_server.target) as client:
        code, details = status_of(lambda: client.predict([solid_image("red")]))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "no CURRENT version" in details
        # Nothing has trained on this store: the message says to start the trainer.
        assert "start `tlserve-trainer run`" in details
        assert (
            health.Check(health_pb2.HealthCheckRequest()).status
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
        live = health.Check(health_pb2.HealthCheckRequest(service="liveness"))
        assert live.status == health_pb2.HealthCheckResponse.SERVING
        code, _ = status_of(client.get_model)
        assert code == grpc.StatusCode.FAILED_PRECONDITION

        version = publish_colour_version(empty_server.registry)
        empty_server.wait_for_version(version)
        assert client.predict_one(solid_image("green")).label == "green"
        assert (
            health.Check(health_pb2.HealthCheckRequest()).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    channel.close()


def _bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 9))
        + chunk(b"IEND", b"")
    )


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def _tensor(dtype: int, shape: list[int], data: bytes) -> pb.Image:
    return pb.Image(tensor=pb.Tensor(dtype=dtype, shape=shape, data=data))


NAN_PIXELS = np.zeros((4, 4, 3), dtype="<f4")
NAN_PIXELS[1, 1, 1] = np.nan

BAD_REQUESTS = {
    "no images": ([], 0, grpc.StatusCode.INVALID_ARGUMENT, "no images"),
    "empty image message": ([pb.Image()], 0, grpc.StatusCode.INVALID_ARGUMENT, "set either"),
    "empty bytes": ([pb.Image(encoded=b"")], 0, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    "corrupt bytes": (
        [pb.Image(encoded=b"not an image at all")],
        0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a recognised image",
    ),
    "truncated jpeg": (
        [pb.Image(encoded=solid_image("red", (300, 300), "JPEG")[:400])],
        0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "truncated or corrupt",
    ),
    "unsupported format": (
        [pb.Image(encoded=_gif())],
        0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "accepted formats",
    ),
    "decompression bomb": (
        [pb.Image(encoded=_bomb_png(1000, 1000))],
        0,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "at most 250000",
    ),
    "huge side": (
        [pb.Image(encoded=_bomb_png(5000, 10))],
        0,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "longest accepted side",
    ),
    "zero-sized tensor": (
        [_tensor(pb.UINT8, [0, 5, 3], b"")],
        0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "at least 1 pixel",
    ),
    "unspecified dtype": (
        [_tensor(pb.DATA_TYPE_UNSPECIFIED, [2, 2, 3], bytes(12))],
        0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "dtype DATA_TYPE_UNSPECIFIED is not accepted",
    ),
    "wrong rank": (
        [_tensor(pb.UINT8, [4, 4], bytes(16))],
        0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "shape [4, 4]",
    ),
    "four channels": (
        [_tensor(pb.UINT8, [2, 2, 4], bytes(16))],
        0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "expected [height, width, 3]",
    ),
    "data shorter than shape": (
        [_tensor(pb.UINT8, [4, 4, 3], bytes(10))],
        0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "has 10 bytes",
    ),
    "nan pixels": (
        [_tensor(pb.FLOAT32, [4, 4, 3], NAN_PIXELS.tobytes())],
        0,
        grpc.StatusCode.INVALID_ARGUMENT,
        "NaN",
    ),
    "too many images": (
        [pb.Image(encoded=solid_image("red"))] * 5,
        0,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "at most 4 are accepted",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_precise_errors_and_the_server_keeps_serving(
    strict: ServerThread, case: str
) -> None:
    images, top_k, expected_code, expected_text = BAD_REQUESTS[case]
    with TlserveClient(strict.target) as client:
        request = pb.PredictRequest(images=images, top_k=top_k)
        code, details = status_of(lambda: client.stub.Predict(request, timeout=10))
        assert code == expected_code, details
        assert expected_text in details
        assert client.predict_one(solid_image("blue")).label == "blue"


def test_oversized_message_is_refused(strict: ServerThread) -> None:
    with TlserveClient(strict.target) as client:
        request = pb.PredictRequest(images=[pb.Image(encoded=b"\xff" * 1_200_000)])
        code, _ = status_of(lambda: client.stub.Predict(request, timeout=10))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.predict_one(solid_image("red")).label == "red"


def test_bad_image_among_good_ones_names_its_index(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        request = pb.PredictRequest(
            images=[pb.Image(encoded=solid_image("red")), pb.Image(encoded=b"junk")]
        )
        code, details = status_of(lambda: client.stub.Predict(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("image 1:")


def test_unknown_version_in_get_model(served: ServerThread) -> None:
    with TlserveClient(served.target) as client:
        code, details = status_of(lambda: client.get_model("20990101-000000-000000"))
    assert code == grpc.StatusCode.NOT_FOUND and "not in the registry" in details
