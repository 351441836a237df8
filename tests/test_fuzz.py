"""Seeded fuzzing of a real server: both gRPC services and both protocols, a few
thousand requests (random and mutated valid ones). Every request must get an answer
that is not INTERNAL/UNKNOWN (HTTP 5xx other than 503), within its deadline, and the
server's memory must stay bounded."""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from examples.colour_model import publish_colour_version
from tests.support import ServerThread, http_call, postgres_or_skip, solid_image
from tlserve.proto import classifier_pb2 as pb
from tlserve.proto import grpc_predict_v2_pb2 as kpb
from tlserve.server.api.tensors import encode_bytes_elements
from tlserve.server.registry import Registry

SEED = int(os.environ.get("TLSERVE_FUZZ_SEED", "20261124"))
# More from outside the suite: TLSERVE_FUZZ_CASES=10000.
CASES_PER_PROTOCOL = int(os.environ.get("TLSERVE_FUZZ_CASES", "2500"))
MESSAGE_LIMIT = 4 * 1024 * 1024
ADMIN = "fuzz-admin-token-0123456789"
FORBIDDEN_GRPC = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# RESOURCE_EXHAUSTED (gRPC) and 413/429 (HTTP) are right only where a limit was hit, and
# their message says which (this server has no rate limit on feedback).
NAMES_A_LIMIT = re.compile(r"at most|queue is full|larger than|limit", re.IGNORECASE)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerThread]:
    """The same server on each store: SQLite, and this machine's PostgreSQL (its text
    cannot hold NUL, its errors differ; 43 HTTP 5xx there were not SQLite's 116)."""
    data = tmp_path_factory.mktemp("fuzz")
    publish_colour_version(Registry.local(data / "registry"))
    store_url = postgres_or_skip() if request.param == "postgres" else ""
    running = ServerThread(
        data,
        store_url=store_url,
        admin_tokens=ADMIN,
        anonymous_role="label",
        max_message_bytes=MESSAGE_LIMIT,
        max_images_per_request=16,
        feedback_rate=0.0,
    ).start()
    yield running
    running.stop()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples this process's RSS (the server runs in it) every 10 ms."""

    def __init__(self) -> None:
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- random values ---------------------------------------------------------------------


def text(rng: random.Random) -> str:
    """Names, ids, labels and sources as a hostile client sends them: empty, control and
    bidi characters, paths, and lengths up to 20 KB (ids and names of 10 KB and more)."""
    long = rng.choice(["a" * rng.randint(1, 300), "m" * 10_000, "é" * 10_000])
    pool = ["", "red", "tlserve", long, "\x00", "é", "\u202e", "../..", "\n"]
    pieces = [rng.choice(pool) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.2:
        pieces.append("".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(1, 20))))
    return "".join(pieces)


def blob(rng: random.Random) -> bytes:
    choice = rng.random()
    if choice < 0.3:
        return solid_image(
            rng.choice(["red", "green", "blue"]), (rng.randint(1, 64), rng.randint(1, 64))
        )
    if choice < 0.5:
        valid = bytearray(solid_image("red"))
        for _ in range(rng.randint(1, 8)):
            valid[rng.randrange(len(valid))] = rng.randrange(256)
        return bytes(valid[: rng.randint(0, len(valid))])
    return rng.randbytes(rng.randint(0, 2048))


def shape(rng: random.Random) -> list[int]:
    dims = [
        rng.choice([0, 1, 2, 3, 32, 4096, 2**31, 2**32, 2**62, -1])
        for _ in range(rng.randint(0, 5))
    ]
    if rng.random() < 0.3:
        return [rng.randint(1, 3), 32, 32, 3]
    return dims


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        action = rng.random()
        if action < 0.4 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif action < 0.6:
            out[rng.randint(0, len(out)) : rng.randint(0, len(out))] = rng.randbytes(
                rng.randint(1, 16)
            )
        elif action < 0.8 and out:
            del out[rng.randrange(len(out)) :]
        else:
            out += out[: rng.randint(0, len(out))]
    return bytes(out)


# ---- requests ----------------------------------------------------------------------------


def predict_request(rng: random.Random) -> pb.PredictRequest:
    images = []
    for _ in range(rng.choice([0, 1, 1, 2, 17])):
        if rng.random() < 0.6:
            images.append(pb.Image(encoded=blob(rng)))
        else:
            dims = shape(rng)[:4]
            tensor = pb.Tensor(
                dtype=rng.choice([0, 1, 2, 7]),
                shape=[abs(d) % 2**40 for d in dims],
                data=rng.randbytes(rng.randint(0, 4096)),
            )
            images.append(pb.Image(tensor=tensor))
    return pb.PredictRequest(images=images, top_k=rng.choice([0, 1, 3, 99, 2**32 - 1]))


def feedback_request(rng: random.Random) -> pb.SubmitFeedbackRequest:
    request = pb.SubmitFeedbackRequest(
        label=text(rng), idempotency_key=text(rng)[:250], source=text(rng)
    )
    if rng.random() < 0.5:
        request.prediction_id = text(rng)
    else:
        request.image.encoded = blob(rng)
    return request


def infer_request(rng: random.Random) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(
        model_name=rng.choice(["tlserve", "tlserve", text(rng)]),
        model_version=rng.choice(["", "", text(rng)]),
    )
    for _ in range(rng.choice([0, 1, 1, 2])):
        datatype = rng.choice(["BYTES", "UINT8", "FP32", "INT64", text(rng)])
        tensor = request.inputs.add(
            name=rng.choice(["IMAGE", "PIXELS", text(rng)]), datatype=datatype, shape=shape(rng)
        )
        if rng.random() < 0.7:
            if datatype == "BYTES" and rng.random() < 0.5:
                payload = encode_bytes_elements([blob(rng) for _ in range(rng.randint(0, 3))])
            else:
                payload = rng.randbytes(rng.choice([0, 3, 3072, 12288, 65536]))
            request.raw_input_contents.append(payload)
        else:
            tensor.contents.bytes_contents.extend(blob(rng) for _ in range(rng.randint(0, 2)))
            tensor.contents.fp32_contents.extend(
                rng.choice([float("nan"), -1.0, 0.5, 300.0]) for _ in range(rng.randint(0, 5))
            )
    for _ in range(rng.choice([0, 0, 1])):
        output = request.outputs.add(name=rng.choice(["PROBABILITIES", "LABEL", text(rng)]))
        output.parameters["class_count"].int64_param = rng.choice([-5, 0, 2, 2**40])
    return request


GRPC_METHODS: list[tuple[str, Callable[[random.Random], object]]] = [
    ("/tlserve.v1.Classifier/Predict", predict_request),
    ("/tlserve.v1.Classifier/SubmitFeedback", feedback_request),
    (
        "/tlserve.v1.Classifier/SuggestLabels",
        lambda r: pb.SuggestLabelsRequest(
            count=r.choice([0, 1, 5, 101, 2**31]), strategy=r.randint(-1, 5)
        ),
    ),
    ("/tlserve.v1.Classifier/GetModel", lambda r: pb.GetModelRequest(version=text(r))),
    ("/tlserve.v1.Classifier/ListLabels", lambda r: pb.ListLabelsRequest()),
    ("/tlserve.v1.Classifier/Rollback", lambda r: pb.RollbackRequest(version=text(r))),
    ("/inference.GRPCInferenceService/ModelInfer", infer_request),
    (
        "/inference.GRPCInferenceService/ModelMetadata",
        lambda r: kpb.ModelMetadataRequest(name=text(r), version=text(r)),
    ),
    (
        "/inference.GRPCInferenceService/ModelReady",
        lambda r: kpb.ModelReadyRequest(name=r.choice(["tlserve", text(r)]), version=text(r)),
    ),
]


def test_fuzz_grpc(server: ServerThread) -> None:
    rng = random.Random(SEED)
    bad: list[str] = []
    with (
        grpc.insecure_channel(
            server.target, options=[("grpc.max_send_message_length", 2 * MESSAGE_LIMIT)]
        ) as channel,
        PeakRss() as memory,
    ):
        for case in range(CASES_PER_PROTOCOL):
            method, make = rng.choice(GRPC_METHODS)
            payload = make(rng).SerializeToString()  # type: ignore[attr-defined]
            if rng.random() < 0.4:
                payload = mutate(rng, payload)
            metadata = (
                (("authorization", rng.choice([f"Bearer {ADMIN}", ADMIN, "Bearer x", text(rng)])),)
                if rng.random() < 0.2
                else ()
            )
            call = channel.unary_unary(method)
            try:
                call(
                    payload,
                    timeout=10,
                    metadata=tuple((k, v) for k, v in metadata if v.isascii() and v.isprintable()),
                )
            except grpc.RpcError as error:
                details = error.details() or ""
                if (
                    error.code() in FORBIDDEN_GRPC
                    or error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    or (
                        error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        and not NAMES_A_LIMIT.search(details)
                    )
                    or len(details) > 2000
                ):
                    bad.append(f"case {case} {method}: {error.code().name} {details[:300]}")
    assert bad == [], f"seed {SEED}: {bad[:5]}"
    assert memory.peak - memory.baseline < 3 * MESSAGE_LIMIT + 64 * 1024 * 1024


def http_case(rng: random.Random, url: str) -> tuple[str, str, bytes | None, dict[str, str]]:
    routes = [
        ("POST", "/v1/predict"),
        ("POST", "/v1/feedback"),
        ("GET", "/v1/suggestions"),
        ("GET", "/v1/labels"),
        ("GET", "/v1/models/" + rng.choice(["x", "..", "%00", "20990101-000000-000000-0000"])),
        ("POST", "/v1/rollback"),
        ("POST", "/v1/labels/approve"),
        ("POST", "/v2/models/tlserve/infer"),
        ("POST", "/v2/models/" + rng.choice(["tlserve", "other"]) + "/versions/x/infer"),
        ("GET", "/v2/models/tlserve"),
        ("POST", "/v1/labels/retract"),
        ("POST", "/v1/models/" + rng.choice(["tlserve", "other", "Bad.Name"]) + "/feedback"),
        ("GET", "/v1/models/tlserve/suggestions"),
        ("POST", "/v1/training"),
        ("POST", "/v2/repository/index"),
    ]
    method, path = rng.choice(routes)
    query = rng.choice(
        ["", "?top_k=-1", "?count=0", "?count=abc", "?keep=maybe", "?images=false&count=3"]
    )
    kind = rng.random()
    if kind < 0.3:
        document: object = {
            "label": text(rng),
            "image_base64": rng.choice(["", "!!", "aGVsbG8="]),
            "inputs": [
                {
                    "name": rng.choice(["IMAGE", "PIXELS"]),
                    "datatype": rng.choice(["BYTES", "UINT8", "FP32"]),
                    "shape": shape(rng),
                    "data": rng.choice([[], [1, 2], ["x"], [[1]]]),
                }
            ],
            "labels": rng.choice([[], ["a"], "a", [1]]),
            "version": rng.choice(["", 3, None]),
        }
        body = json.dumps(document).encode()
        if rng.random() < 0.3:
            body = mutate(rng, body)
        headers = {"Content-Type": "application/json"}
    elif kind < 0.5:
        body = blob(rng)
        headers = {"Content-Type": rng.choice(["image/png", "application/octet-stream"])}
        if rng.random() < 0.3:
            headers["Inference-Header-Content-Length"] = str(rng.choice([-1, 0, 5, 10**12]))
    elif kind < 0.7:
        boundary = "fuzz"
        names = ["image", "label", "x"]
        parts = b"".join(
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="{rng.choice(names)}"\r\n\r\n'.encode()
            + blob(rng)
            + b"\r\n"
            for _ in range(rng.randint(0, 4))
        )
        body = mutate(rng, parts) if rng.random() < 0.3 else parts + f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    elif kind < 0.85:
        body, headers = hostile_body(rng)
    else:
        body, headers = rng.randbytes(rng.randint(0, 512)), {}
    if rng.random() < 0.2:
        headers["Authorization"] = rng.choice(
            [f"Bearer {ADMIN}", ADMIN, "Bearer nope", "Bearer \xff\xfe"]
        )
    return method, url + path + query, body if method == "POST" else None, headers


def hostile_body(rng: random.Random) -> tuple[bytes, dict[str, str]]:
    """What was seen from outside to answer 5xx, or be taken where it must be refused:
    deep nesting, integers of thousands of digits, bodies that are not their encoding,
    labels that are not UTF-8, pixel data that is not numbers."""
    json_type = {"Content-Type": "application/json"}
    choice = rng.randrange(6)
    if choice == 0:
        depth = rng.choice([1000, 100_000])
        return b"[" * depth + b"]" * depth, json_type
    if choice == 1:
        digits = "9" * rng.choice([400, 4300, 5000])
        tensor = f'{{"name": "PIXELS", "datatype": "UINT8", "shape": [{digits}, 2, 2, 3]'
        return f'{{"inputs": [{tensor}, "data": [1]}}], "label": {digits}}}'.encode(), json_type
    if choice == 2:
        body = rng.choice([b"not gzip", gzip.compress(b"{}")[:-4], gzip.compress(blob(rng))])
        return body, {"Content-Type": "image/png", "Content-Encoding": rng.choice(["gzip", "br"])}
    if choice == 3:
        label = rng.choice([b"\xff\xfe", b"ok", b"\xc3"])
        body = (
            b'--fuzz\r\nContent-Disposition: form-data; name="image"\r\n\r\n'
            + blob(rng)
            + b'\r\n--fuzz\r\nContent-Disposition: form-data; name="label"\r\n\r\n'
            + label
            + b"\r\n--fuzz--\r\n"
        )
        return body, {"Content-Type": "multipart/form-data; boundary=fuzz"}
    if choice == 4:
        value = rng.choice(['"7"', "true", "null", "[1, true]", "1e400", "-1", "256"])
        data = ", ".join([value] * 12)
        tensor = (
            f'{{"name": "PIXELS", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [{data}]}}'
        )
        return f'{{"inputs": [{tensor}]}}'.encode(), json_type
    nested = '{"a": ' * 3000 + "1" + "}" * 3000
    return f'{{"sample_id": {nested}}}'.encode(), json_type


def test_fuzz_http(server: ServerThread) -> None:
    rng = random.Random(SEED + 1)
    bad: list[str] = []
    with PeakRss() as memory:
        for case in range(CASES_PER_PROTOCOL):
            method, url, body, headers = http_case(rng, server.http_url)
            try:
                reply = http_call(url, method, body, headers, timeout=10)
            except OSError as exc:  # no answer in time, or the connection dropped
                bad.append(f"case {case} {method} {url} {headers}: {exc!r} {(body or b'')[:120]!r}")
                continue
            if reply.status >= 500 and reply.status != 503:
                bad.append(f"case {case} {method} {url}: {reply.status} {reply.body[:200]!r}")
            elif reply.status >= 400:
                error = json.loads(reply.body)
                assert set(error) == {"error", "code"} and len(error["error"]) < 2000
                if reply.status in (413, 429) and not NAMES_A_LIMIT.search(error["error"]):
                    bad.append(f"case {case} {method} {url}: {reply.status} {error['error']}")
    assert bad == [], f"seed {SEED}: {bad[:5]}"
    assert memory.peak - memory.baseline < 3 * MESSAGE_LIMIT + 64 * 1024 * 1024


def test_the_fuzzer_finds_real_refusals(server: ServerThread) -> None:
    """The generator is not vacuous: its requests are refused for many reasons."""
    rng = random.Random(SEED)
    codes = set()
    with grpc.insecure_channel(server.target) as channel:
        for _ in range(200):
            method, make = rng.choice(GRPC_METHODS)
            try:
                channel.unary_unary(method)(make(rng).SerializeToString(), timeout=10)  # type: ignore[attr-defined]
                codes.add("OK")
            except grpc.RpcError as error:
                codes.add(error.code().name)
    assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND"} <= codes, codes
