"""Hostile HTTP input, as seen from outside (issue 23): each request below answered 5xx,
or was accepted where it must be refused, before the fixes. Every answer is a JSON error
with the right status; credentials are checked before a body is read; a caller may send
one authorization header, not two, on either protocol."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support import (
    ADMIN,
    LABEL,
    PREDICT,
    ServerThread,
    label_samples,
    multipart,
    serve_colour_model,
    solid_image,
)
from tlserve.clients import TlserveClient
from tlserve.proto import classifier_pb2 as pb
from tlserve.proto import classifier_pb2_grpc as pb_grpc

JSON = "application/json"
NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[ServerThread]:
    """Tokens of every role and no anonymous access."""
    server = serve_colour_model(
        tmp_path,
        predict_tokens=PREDICT,
        label_tokens=LABEL,
        admin_tokens=ADMIN,
        anonymous_role="none",
    )
    yield server
    server.stop()


def send(
    server: ServerThread,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[str, str | bytes]] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with exactly these headers (repeated names and raw bytes included)."""
    assert server.server is not None and server.server.http_port is not None
    connection = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=60)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers or []:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def error_of(answer: tuple[int, dict[str, str], bytes]) -> str:
    status, headers, body = answer
    assert headers["Content-Type"].startswith(JSON), (status, body[:200])
    return str(json.loads(body)["error"])


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def test_credentials_are_checked_before_the_body_is_read(secured: ServerThread) -> None:
    """Admin and label routes parsed the body first: an anonymous caller reached the JSON
    parser (and its RecursionError), and learned which model names exist."""
    for path in ("/v1/labels/retract", "/v1/labels/approve", "/v2/models/tlserve/infer"):
        answer = send(secured, "POST", path, NESTED, [("Content-Type", JSON)])
        assert answer[0] == 401, (path, answer[2][:200])
        assert "credential" in error_of(answer)
        assert answer[1]["WWW-Authenticate"].startswith("Bearer")
    unknown = send(secured, "POST", "/v2/models/other/infer", b"{}", [("Content-Type", JSON)])
    assert unknown[0] == 401, "a model's existence is not told before authentication"
    # With the credential, the same bodies are refused as what they are.
    for path in ("/v1/labels/retract", "/v1/labels/approve"):
        answer = send(secured, "POST", path, NESTED, [("Content-Type", JSON), bearer(ADMIN)])
        assert answer[0] == 400 and "nested" in error_of(answer), answer[2][:200]


def test_a_shape_of_thousands_of_digits_is_refused(secured: ServerThread) -> None:
    for digits in (4300, 5000):
        tensor = f'{{"name": "PIXELS", "datatype": "UINT8", "shape": [{"9" * digits}, 2, 2, 3]'
        body = f'{{"inputs": [{tensor}, "data": [1]}}]}}'.encode()
        answer = send(
            secured,
            "POST",
            "/v2/models/tlserve/infer",
            body,
            [("Content-Type", JSON), bearer(PREDICT)],
        )
        assert answer[0] == 400, (digits, answer[2][:300])
        assert len(error_of(answer)) < 400


@pytest.mark.parametrize("value", ['"7"', "true", "[1, true]", "null"])
def test_uint8_pixels_given_as_strings_or_booleans_are_refused(
    secured: ServerThread, value: str
) -> None:
    data = ", ".join([value] + ["7"] * 11)
    tensor = f'{{"name": "PIXELS", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [{data}]}}'
    answer = send(
        secured,
        "POST",
        "/v2/models/tlserve/infer",
        f'{{"inputs": [{tensor}]}}'.encode(),
        [("Content-Type", JSON), bearer(PREDICT)],
    )
    assert answer[0] == 400, answer[2][:300]
    assert "number" in error_of(answer)


def test_a_bearer_token_of_raw_bytes_is_unauthenticated(secured: ServerThread) -> None:
    answer = send(secured, "GET", "/v1/labels", headers=[("Authorization", b"Bearer \xff\xfe")])
    assert answer[0] == 401 and "printable" in error_of(answer)


def test_a_body_that_is_not_the_gzip_it_claims_is_refused(secured: ServerThread) -> None:
    answer = send(
        secured,
        "POST",
        "/v1/predict",
        b"this is not gzip",
        [("Content-Type", "image/png"), ("Content-Encoding", "gzip"), bearer(PREDICT)],
    )
    assert answer[0] == 400 and "gzip" in error_of(answer), answer[2][:300]
    # A real gzip body is read as the image it holds.
    good = send(
        secured,
        "POST",
        "/v1/predict",
        gzip.compress(solid_image("red")),
        [("Content-Type", "image/png"), ("Content-Encoding", "gzip"), bearer(PREDICT)],
    )
    assert good[0] == 200, good[2][:300]
    assert json.loads(good[2])["predictions"][0]["top"][0]["label"] == "red"


def test_a_multipart_label_that_is_not_utf8_is_refused(secured: ServerThread) -> None:
    body, headers = multipart(
        [("image", solid_image("red"), "red.png"), ("label", b"\xff\xfe", None)]
    )
    answer = send(secured, "POST", "/v1/feedback", body, [*headers.items(), bearer(LABEL)])
    assert answer[0] == 400 and "UTF-8" in error_of(answer), answer[2][:300]
    with TlserveClient(secured.target, token=LABEL) as client:
        assert label_samples(client.list_labels()) == {}, "nothing was stored"


def test_two_authorization_headers_are_refused_on_both_protocols(secured: ServerThread) -> None:
    """gRPC took the last, HTTP the first: a predict token then an admin token approved
    labels over HTTP."""
    body = json.dumps({"labels": ["red"]}).encode()
    answer = send(
        secured,
        "POST",
        "/v1/labels/approve",
        body,
        [("Content-Type", JSON), bearer(PREDICT), bearer(ADMIN)],
    )
    assert answer[0] == 401 and "one authorization" in error_of(answer), answer[2][:300]
    with grpc.insecure_channel(secured.target) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        metadata = (("authorization", f"Bearer {PREDICT}"), ("authorization", f"Bearer {ADMIN}"))
        with pytest.raises(grpc.RpcError) as refused:
            stub.ApproveLabels(
                pb.ApproveLabelsRequest(labels=["red"]), metadata=metadata, timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "one authorization" in (refused.value.details() or "")


# ---- one budget per request: bytes (after Content-Encoding), parts, time ----------------

BODY_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def small_bodies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Anonymous predict and label, bodies of at most 256 KB, 1 s for a body to arrive."""
    server = serve_colour_model(
        tmp_path_factory.mktemp("bodies"), max_message_bytes=BODY_LIMIT, max_body_seconds=1.0
    )
    yield server
    server.stop()


def send_streamed(
    server: ServerThread,
    path: str,
    headers: list[tuple[str, str]],
    chunks: list[bytes],
    pause_before_last: float = 0.0,
) -> tuple[int, dict[str, str], bytes]:
    """A request whose body goes chunked (no Content-Length, so the server cannot refuse
    it by its declared size); sending stops when the server closes, then the answer is
    read."""
    assert server.server is not None and server.server.http_port is not None
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=30) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        try:
            sock.sendall(head.encode())
            for index, chunk in enumerate(chunks):
                if index == len(chunks) - 1:
                    time.sleep(pause_before_last)
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end: the answer is waiting
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


def test_multipart_parts_share_one_budget(small_bodies: ServerThread) -> None:
    """Parts were capped one by one: 24 parts of 60 MB took a server to 1.6 GB."""
    part = bytes(BODY_LIMIT // 2)
    body, headers = multipart([("image", part, f"{i}.png") for i in range(6)])
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    answer = send_streamed(small_bodies, "/v1/predict", list(headers.items()), chunks)
    assert answer[0] == 413, answer[2][:300]
    assert f"at most {BODY_LIMIT} bytes" in error_of(answer)
    # Declared too large: refused by its Content-Length, unread.
    declared = send(small_bodies, "POST", "/v1/predict", body, list(headers.items()))
    assert declared[0] == 413 and f"is {len(body)} bytes" in error_of(declared)


def test_a_gzip_body_stops_inflating_at_the_limit(small_bodies: ServerThread) -> None:
    bomb = gzip.compress(bytes(100 * BODY_LIMIT))  # 25 MB of zeros in about 25 KB
    for path, kind in (("/v1/predict", "image/png"), ("/v1/feedback", JSON)):
        answer = send(
            small_bodies,
            "POST",
            path,
            bomb,
            [("Content-Type", kind), ("Content-Encoding", "gzip")],
        )
        assert answer[0] == 413, (path, answer[2][:300])
        assert "after Content-Encoding" in error_of(answer)
    # deflate, zlib-wrapped as RFC 9110 says, is read like gzip.
    good = send(
        small_bodies,
        "POST",
        "/v1/predict",
        zlib.compress(solid_image("red")),
        [("Content-Type", "image/png"), ("Content-Encoding", "deflate")],
    )
    assert good[0] == 200, good[2][:300]


@pytest.mark.parametrize(
    ("headers", "part_header", "said"),
    [
        ([("Content-Encoding", "gzip")], "", "multipart body is accepted uncompressed"),
        ([], "Content-Encoding: gzip\r\n", "has Content-Encoding"),
        ([("Content-Encoding", "br")], "", "Content-Encoding 'br' is not accepted"),
    ],
)
def test_compression_inside_multipart_is_refused(
    small_bodies: ServerThread, headers: list[tuple[str, str]], part_header: str, said: str
) -> None:
    """A gzip bomb inside a part stalled the loop for 10.9 s while it inflated."""
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n{part_header}\r\n'
        ).encode()
        + gzip.compress(bytes(1 << 20))
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = ("Content-Type", f"multipart/form-data; boundary={boundary}")
    answer = send(small_bodies, "POST", "/v1/predict", body, [content_type, *headers])
    assert answer[0] == 400, answer[2][:300]
    assert said in error_of(answer)


def test_a_body_that_trickles_in_is_refused_in_time(small_bodies: ServerThread) -> None:
    image = solid_image("red")
    answer = send_streamed(
        small_bodies,
        "/v1/predict",
        [("Content-Type", "image/png")],
        [image[:10], image[10:]],
        pause_before_last=2.5,
    )
    assert answer[0] == 408, answer[2][:300]
    assert "max_body_seconds" in error_of(answer)
    # The same body sent at once is served.
    served = send(small_bodies, "POST", "/v1/predict", image, [("Content-Type", "image/png")])
    assert served[0] == 200, served[2][:300]


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/labels HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n",  # DEL in a header
        b"GET /v1/la bels HTTP/1.1\r\nHost: t\r\n\r\n",  # a bad request line
    ],
)
def test_a_request_the_http_parser_refuses_is_one_log_line(
    small_bodies: ServerThread, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    """aiohttp refuses these before any route (400, its own plain-text body) and logged
    each with a traceback at ERROR: a flood of malformed requests was a flood of
    tracebacks. Now one INFO line each, saying why."""
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    assert small_bodies.server is not None and small_bodies.server.http_port is not None
    with socket.create_connection(("127.0.0.1", small_bodies.server.http_port), timeout=10) as s:
        s.sendall(raw)
        response = http.client.HTTPResponse(s)
        response.begin()
        assert response.status == 400
    deadline = time.monotonic() + 5
    while not caplog.records and time.monotonic() < deadline:
        time.sleep(0.01)
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.INFO and records[0].exc_info is None
    assert "refused by the HTTP parser" in records[0].getMessage()
