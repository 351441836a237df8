"""One table of bad requests, each sent over gRPC and over HTTP to the same server: both
refuse it with the matching status (INVALID_ARGUMENT and 400, ...), the same message,
a JSON error body on HTTP, and the server goes on answering good requests."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from examples.colour_model import publish_colour_version
from tests.support import (
    HttpReply,
    ServerThread,
    http_call,
    multipart,
    postgres_or_skip,
    solid_image,
)
from tlserve.proto import classifier_pb2 as pb
from tlserve.proto import classifier_pb2_grpc as pb_grpc
from tlserve.proto import grpc_predict_v2_pb2 as kpb
from tlserve.proto import grpc_predict_v2_pb2_grpc as kpb_grpc
from tlserve.server.api.tensors import encode_bytes_elements
from tlserve.server.registry import Registry

TOKEN = "s3cret-admin-token"
MAX_IMAGES = 4


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """One server per store: every refusal must hold on both (PostgreSQL refuses NUL
    characters and raced on idempotency keys where SQLite did not)."""
    store_url = postgres_or_skip() if request.param == "postgres" else ""
    data_dir: Path = tmp_path_factory.mktemp("bad-input")
    publish_colour_version(Registry.local(data_dir / "registry"))
    thread = ServerThread(
        data_dir,
        admin_tokens=TOKEN,
        anonymous_role="label",
        max_images_per_request=MAX_IMAGES,
        store_url=store_url,
    ).start()
    try:
        yield thread
    finally:
        thread.stop()


# ---- KServe ModelInfer: one description, two transports --------------------------------


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    raw: bytes


@dataclass(frozen=True)
class Infer:
    inputs: list[Tensor]
    model: str = "tlserve"
    version: str = ""
    outputs: list[str] = field(default_factory=list)

    def over_grpc(self, target: str) -> None:
        request = kpb.ModelInferRequest(
            model_name=self.model,
            model_version=self.version,
            inputs=[
                kpb.ModelInferRequest.InferInputTensor(
                    name=t.name, datatype=t.datatype, shape=t.shape
                )
                for t in self.inputs
            ],
            raw_input_contents=[t.raw for t in self.inputs],
            outputs=[
                kpb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in self.outputs
            ],
        )
        with grpc.insecure_channel(target) as channel:
            kpb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)

    def over_http(self, url: str) -> HttpReply:
        header = {
            "inputs": [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": t.shape,
                    "parameters": {"binary_data_size": len(t.raw)},
                }
                for t in self.inputs
            ],
            "outputs": [{"name": n} for n in self.outputs],
        }
        document = json.dumps(header).encode()
        path = f"/v2/models/{self.model}"
        if self.version:
            path += f"/versions/{self.version}"
        return http_call(
            f"{url}{path}/infer",
            "POST",
            document + b"".join(t.raw for t in self.inputs),
            {"Inference-Header-Content-Length": str(len(document))},
        )


def pixels(shape: list[int], datatype: str = "UINT8", raw: bytes | None = None) -> Tensor:
    size = int(np.prod(shape)) * (4 if datatype == "FP32" else 1)
    return Tensor("PIXELS", datatype, shape, bytes(size) if raw is None else raw)


def encoded(*images: bytes) -> Tensor:
    return Tensor("IMAGE", "BYTES", [len(images)], encode_bytes_elements(list(images)))


INFER = {
    "unknown model": (Infer([pixels([1, 32, 32, 3])], model="other"), "unknown model 'other'"),
    "unknown version": (Infer([pixels([1, 32, 32, 3])], version="v999"), "'v999' is not being"),
    "no inputs": (Infer([]), "exactly one input"),
    "two inputs": (Infer([pixels([1, 32, 32, 3]), pixels([1, 32, 32, 3])]), "exactly one"),
    "unknown input": (Infer([Tensor("X", "UINT8", [1], b"\0")]), "unknown input 'X'"),
    "wrong dtype": (
        Infer([pixels([1, 32, 32, 3], "INT32", bytes(12288))]),
        "datatype INT32 is not accepted",
    ),
    "wrong rank": (Infer([pixels([32, 32, 3])]), "expected [batch, height, width, 3]"),
    "short data": (Infer([pixels([2, 32, 32, 3], raw=bytes(3072))]), "has 3072 bytes"),
    "shape past 64 bits": (
        Infer([pixels([1, 4294967296, 4294967296, 3], raw=b"")]),
        "a shape dimension is beyond 2147483647",
    ),
    "nan in fp32": (
        Infer([pixels([1, 2, 2, 3], "FP32", np.full(12, np.nan, dtype="<f4").tobytes())]),
        "NaN",
    ),
    "truncated bytes element": (
        Infer([Tensor("IMAGE", "BYTES", [1], b"\x10\0\0\0abc")]),
        "runs past the end",
    ),
    "element count mismatch": (
        Infer([Tensor("IMAGE", "BYTES", [2], encode_bytes_elements([b"a"]))]),
        "1 elements were sent",
    ),
    "corrupt image": (Infer([encoded(b"junk")]), "not a recognised image"),
    "unknown output": (Infer([pixels([1, 32, 32, 3])], outputs=["LOGITS"]), "unknown outputs"),
}
INFER_STATUS = {"unknown model": 404, "unknown version": 404}


@pytest.mark.parametrize("case", list(INFER))
def test_model_infer_refusals_match(server: ServerThread, case: str) -> None:
    request, text = INFER[case]
    http_status = INFER_STATUS.get(case, 400)
    grpc_code = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND}
    with pytest.raises(grpc.RpcError) as refused:
        request.over_grpc(server.target)
    assert refused.value.code() == grpc_code[http_status], refused.value.details()
    assert text in refused.value.details()
    reply = request.over_http(server.http_url)
    assert reply.status == http_status, reply.body[:300]
    assert reply.headers["Content-Type"].startswith("application/json")
    assert text in reply.json()["error"]
    assert reply.json()["error"] == refused.value.details()
    assert_still_serving(server)


# ---- tlserve's own calls ------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    grpc: Callable[[pb_grpc.ClassifierStub], object]
    http: Callable[[str], HttpReply]
    code: grpc.StatusCode
    status: int
    text: str


def _predict_http(url: str, images: list[bytes], query: str = "") -> HttpReply:
    body, headers = multipart([("image", image, "image.png") for image in images])
    return http_call(f"{url}/v1/predict{query}", "POST", body, headers)


def _feedback_http(url: str, **fields: str) -> HttpReply:
    body = json.dumps(fields).encode()
    return http_call(f"{url}/v1/feedback", "POST", body, {"Content-Type": "application/json"})


def _admin_http(url: str, path: str, authorization: str | None) -> HttpReply:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return http_call(f"{url}{path}", "POST", b"{}", headers)


def _metadata(authorization: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", authorization),) if authorization is not None else ()


GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
RED = solid_image("red")
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND

CALLS = {
    "corrupt image": Call(
        lambda s: s.Predict(pb.PredictRequest(images=[pb.Image(encoded=b"junk")])),
        lambda u: _predict_http(u, [b"junk"]),
        INVALID,
        400,
        "not a recognised image",
    ),
    "format not allowed": Call(
        lambda s: s.Predict(pb.PredictRequest(images=[pb.Image(encoded=GIF)])),
        lambda u: _predict_http(u, [GIF]),
        INVALID,
        400,
        "accepted formats: JPEG, PNG, WebP, BMP",
    ),
    "too many images": Call(
        lambda s: s.Predict(pb.PredictRequest(images=[pb.Image(encoded=RED)] * (MAX_IMAGES + 1))),
        lambda u: _predict_http(u, [RED] * (MAX_IMAGES + 1)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        413,
        f"at most {MAX_IMAGES} are accepted",
    ),
    "tensor shape past 64 bits": Call(
        lambda s: s.Predict(
            pb.PredictRequest(
                images=[pb.Image(tensor=pb.Tensor(dtype=pb.UINT8, shape=[2**32, 2**32, 3]))]
            )
        ),
        lambda u: Infer([pixels([1, 2**32, 2**32, 3], raw=b"")]).over_http(u),
        INVALID,
        400,
        "a shape dimension is beyond 2147483647",
    ),
    "empty label": Call(
        lambda s: s.SubmitFeedback(
            pb.SubmitFeedbackRequest(label=" ", image=pb.Image(encoded=RED))
        ),
        lambda u: _feedback_http(u, label=" ", image_base64=base64.b64encode(RED).decode()),
        INVALID,
        400,
        "label is only whitespace",
    ),
    "control character in label": Call(
        lambda s: s.SubmitFeedback(
            pb.SubmitFeedbackRequest(label="a\u202eb", image=pb.Image(encoded=RED))
        ),
        lambda u: _feedback_http(u, label="a\u202eb", image_base64=base64.b64encode(RED).decode()),
        INVALID,
        400,
        "U+202E",
    ),
    "unknown prediction id": Call(
        lambda s: s.SubmitFeedback(pb.SubmitFeedbackRequest(label="red", prediction_id="nope")),
        lambda u: _feedback_http(u, label="red", prediction_id="nope"),
        NOT_FOUND,
        404,
        "prediction 'nope' is unknown",
    ),
    "100 KB prediction id": Call(
        lambda s: s.SubmitFeedback(
            pb.SubmitFeedbackRequest(label="red", prediction_id="x" * 100_000)
        ),
        lambda u: _feedback_http(u, label="red", prediction_id="x" * 100_000),
        INVALID,
        400,
        "(100000 characters) is too long",
    ),
    "NUL in the source": Call(
        lambda s: s.SubmitFeedback(
            pb.SubmitFeedbackRequest(label="red", image=pb.Image(encoded=RED), source="a\0b")
        ),
        lambda u: _feedback_http(
            u, label="red", image_base64=base64.b64encode(RED).decode(), source="a\0b"
        ),
        INVALID,
        400,
        "source holds a control character (U+0000)",
    ),
    "NUL in the idempotency key": Call(
        lambda s: s.SubmitFeedback(
            pb.SubmitFeedbackRequest(
                label="red", image=pb.Image(encoded=RED), idempotency_key="k\0"
            )
        ),
        lambda u: _feedback_http(
            u, label="red", image_base64=base64.b64encode(RED).decode(), idempotency_key="k\0"
        ),
        INVALID,
        400,
        "idempotency_key holds a control character (U+0000)",
    ),
    "NUL in the prediction id": Call(
        lambda s: s.SubmitFeedback(pb.SubmitFeedbackRequest(label="red", prediction_id="p\0")),
        lambda u: _feedback_http(u, label="red", prediction_id="p\0"),
        INVALID,
        400,
        "prediction_id holds a control character (U+0000)",
    ),
    "NUL in a version": Call(
        lambda s: s.GetModel(pb.GetModelRequest(version="v\0")),
        lambda u: http_call(f"{u}/v1/models/v%00"),
        NOT_FOUND,
        404,
        "not a valid version id",
    ),
    "long idempotency key": Call(
        lambda s: s.SubmitFeedback(
            pb.SubmitFeedbackRequest(
                label="red", image=pb.Image(encoded=RED), idempotency_key="k" * 201
            )
        ),
        lambda u: _feedback_http(
            u, label="red", image_base64=base64.b64encode(RED).decode(), idempotency_key="k" * 201
        ),
        INVALID,
        400,
        "idempotency_key is 201 characters",
    ),
    "zero suggestions": Call(
        lambda s: s.SuggestLabels(pb.SuggestLabelsRequest(count=0)),
        lambda u: http_call(f"{u}/v1/suggestions?count=0"),
        INVALID,
        400,
        "count=0 is out of range",
    ),
    "unknown version": Call(
        lambda s: s.GetModel(pb.GetModelRequest(version="20990101-000000-000000-abcd")),
        lambda u: http_call(f"{u}/v1/models/20990101-000000-000000-abcd"),
        NOT_FOUND,
        404,
        "is not in the registry",
    ),
    "version id that escapes": Call(
        lambda s: s.GetModel(pb.GetModelRequest(version="..")),
        lambda u: http_call(f"{u}/v1/models/.."),
        NOT_FOUND,
        404,
        "not a valid version id",
    ),
    "admin without a token": Call(
        lambda s: s.TriggerTraining(pb.TriggerTrainingRequest()),
        lambda u: _admin_http(u, "/v1/training", None),
        grpc.StatusCode.UNAUTHENTICATED,
        401,
        "needs a credential with the `admin` role",
    ),
    "admin token without the Bearer scheme": Call(
        lambda s: s.TriggerTraining(pb.TriggerTrainingRequest(), metadata=_metadata(TOKEN)),
        lambda u: _admin_http(u, "/v1/training", TOKEN),
        grpc.StatusCode.UNAUTHENTICATED,
        401,
        "must be `Bearer <token>`",
    ),
    "wrong admin token": Call(
        lambda s: s.Rollback(pb.RollbackRequest(), metadata=_metadata("Bearer wrong")),
        lambda u: _admin_http(u, "/v1/rollback", "Bearer wrong"),
        grpc.StatusCode.UNAUTHENTICATED,
        401,
        "the bearer token is not valid",
    ),
}


@pytest.mark.parametrize("case", list(CALLS))
def test_classifier_refusals_match(server: ServerThread, case: str) -> None:
    call = CALLS[case]
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as refused:
        call.grpc(pb_grpc.ClassifierStub(channel))
    assert refused.value.code() == call.code, refused.value.details()
    assert call.text in refused.value.details()
    reply = call.http(server.http_url)
    assert reply.status == call.status, reply.body[:300]
    assert call.text in reply.json()["error"], reply.json()
    assert_still_serving(server)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "text"),
    [
        ("GET", "/v3/nothing", None, 404, "Not Found"),
        ("DELETE", "/v1/predict", None, 405, "Method Not Allowed"),
        ("POST", "/v2/models/tlserve/infer", b"{not json", 400, "not valid JSON"),
        ("POST", "/v2/models/tlserve/infer", b"[]", 400, "must be a JSON object"),
        ("POST", "/v1/predict", b"", 400, "no image"),
        ("GET", "/v1/suggestions?count=lots", None, 400, "must be an integer"),
    ],
)
def test_http_only_refusals_are_json(
    server: ServerThread, method: str, path: str, body: bytes | None, status: int, text: str
) -> None:
    reply = http_call(f"{server.http_url}{path}", method, body)
    assert reply.status == status
    assert text in reply.json()["error"]


def test_a_body_over_the_message_limit_is_413(tmp_path: Path) -> None:
    publish_colour_version(Registry.local(tmp_path / "registry"))
    thread = ServerThread(tmp_path, max_message_bytes=4096).start()
    try:
        reply = http_call(f"{thread.http_url}/v1/predict", "POST", bytes(10_000))
        assert reply.status == 413 and "4096" in reply.json()["error"]
    finally:
        thread.stop()


def assert_still_serving(server: ServerThread) -> None:
    reply = _predict_http(server.http_url, [RED])
    assert reply.status == 200 and reply.json()["predictions"][0]["top"][0]["label"] == "red"


def _invalid_utf8_string(message: type) -> bytes:
    """The message's first string field holding invalid UTF-8, encoded by hand."""
    field = next(f for f in message.DESCRIPTOR.fields if f.type == f.TYPE_STRING)
    return bytes([(field.number << 3) | 2, 2, 0xFF, 0xFE])


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        ("/tlserve.v1.Classifier/SubmitFeedback", _invalid_utf8_string(pb.SubmitFeedbackRequest)),
        ("/inference.GRPCInferenceService/ModelInfer", _invalid_utf8_string(kpb.ModelInferRequest)),
        ("/tlserve.v1.Classifier/Predict", b"\x0a\xff\x01"),  # an image field cut short
    ],
)
def test_malformed_protobuf_is_invalid_argument(
    server: ServerThread, method: str, raw: bytes
) -> None:
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.RpcError) as refused:
            call(raw, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid protobuf message" in refused.value.details()
    assert_still_serving(server)


def test_a_malformed_stream_item_fails_the_stream_cleanly(server: ServerThread) -> None:
    good = pb.SubmitFeedbackRequest(label="red", image=pb.Image(encoded=RED)).SerializeToString()
    with grpc.insecure_channel(server.target) as channel:
        call = channel.stream_unary(
            "/tlserve.v1.Classifier/StreamFeedback",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as refused:
            call(iter([good, b"\x0a\x02\xff\xfe"]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "StreamFeedback request is not a valid protobuf message" in refused.value.details()


# ---- names and ids of 10 KB: refused by name, echoed cut short ------------------------------

LONG_NAME = "m" * 10_000


def test_a_10kb_model_name_is_not_found_over_grpc_with_a_short_message(
    server: ServerThread,
) -> None:
    image = encode_bytes_elements([solid_image("red")])
    infer = kpb.ModelInferRequest(
        model_name=LONG_NAME,
        inputs=[kpb.ModelInferRequest.InferInputTensor(name="IMAGE", datatype="BYTES", shape=[1])],
        raw_input_contents=[image],
    )
    with grpc.insecure_channel(server.target) as channel:
        kserve = kpb_grpc.GRPCInferenceServiceStub(channel)
        classifier = pb_grpc.ClassifierStub(channel)
        calls: list[Callable[[], object]] = [
            lambda: kserve.ModelInfer(infer, timeout=10),
            lambda: kserve.ModelMetadata(kpb.ModelMetadataRequest(name=LONG_NAME), timeout=10),
            lambda: classifier.GetModel(pb.GetModelRequest(model=LONG_NAME), timeout=10),
            lambda: classifier.Predict(
                pb.PredictRequest(images=[pb.Image(encoded=solid_image("red"))], model=LONG_NAME),
                timeout=10,
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
            details = refused.value.details() or ""
            assert details.startswith("unknown model 'mmm") and len(details) < 400, details


def test_model_names_of_5kb_and_10kb_over_http(server: ServerThread) -> None:
    """A 5 KB name reaches the app and is 404 with a JSON error cut short; a 10 KB one
    overflows the request line (aiohttp's 8 KB limit) and is 400 before the app."""
    name = "m" * 5_000
    for path in (f"/v2/models/{name}", f"/v2/models/{name}/ready", f"/v1/models/{name}/model"):
        reply = http_call(f"{server.http_url}{path}")
        assert reply.status == 404, path[:40]
        assert reply.json()["error"].startswith("unknown model") and len(reply.body) < 500
    reply = http_call(f"{server.http_url}/v2/models/{LONG_NAME}")
    assert reply.status == 400 and b"more than 8190 bytes" in reply.body
