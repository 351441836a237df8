"""Stress benchmark: the big hostile requests, against a real server process.

    python benchmarks/stress.py [--output FILE]

Each case is sent to a fresh `tlserve-server` (64 MB message limit, the default) while
a probe client sends one small Predict every 20 ms. Its payload is built before the
server starts. Reported per case: the answer, the server's peak RSS above its idle RSS
(sampled from /proc every 5 ms), the worst event-loop lag the server measured while the
case ran (`tlserve_event_loop_lag_seconds`, as the bucket bound it fell under) and the probe's
worst latency (client-side: the probe shares this process, and its GIL, with the code
sending the big request, so it is an upper bound). Targets: peak RSS growth within 3x
the message limit per request in flight, loop lag under 100 ms.

Prints a table and writes JSON (default benchmarks/results/stress.json).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import free_port, server_process, write_report  # noqa: E402
from examples.colour_model import publish_colour_version  # noqa: E402
from tests.support import solid_image  # noqa: E402
from tlserve.proto import classifier_pb2 as pb  # noqa: E402
from tlserve.proto import grpc_predict_v2_pb2 as kpb  # noqa: E402
from tlserve.server.registry import Registry  # noqa: E402

MESSAGE_LIMIT = 64 * 1024 * 1024
LAG_TARGET = 0.1
MB = 1 << 20
Send = Callable[[str], str]


@dataclass
class Result:
    case: str
    in_flight: int
    answer: str
    seconds: float
    peak_rss_growth_mb: float
    # What the store's files grew by (kept predictions, labels): only feedback should.
    store_growth_kb: float
    rss_limit_mb: float
    loop_lag_under_s: float
    probe_worst_ms: float
    passed: bool


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def lag_buckets(metrics_url: str) -> dict[float, float]:
    """The loop-lag histogram's cumulative bucket counts, by upper bound."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {
        float(sample.labels["le"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "tlserve_event_loop_lag_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket")
    }


def lag_bound(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest bound holding every loop-lag observation made between the two reads
    (the server's start-up, loading and warming its model, is not the case's doing)."""
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    return min(
        bound for bound, count in sorted(after.items()) if count - before.get(bound, 0) >= total
    )


def infer_many_tiny_elements(target: str) -> str:
    count = 12_000_000  # 4-byte length + 1 byte each: 60 MB
    raw = (b"\x01\x00\x00\x00x") * count
    request = kpb.ModelInferRequest(model_name="tlserve")
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[count])
    request.raw_input_contents.append(raw)
    return _call(target, "/inference.GRPCInferenceService/ModelInfer", request.SerializeToString())


def predict_many_tiny_images(target: str) -> str:
    request = pb.PredictRequest(images=[pb.Image(encoded=b"x")] * 4_000_000)
    return _call(target, "/tlserve.v1.Classifier/Predict", request.SerializeToString())


def stream_many_items(target: str) -> str:
    """A million real items (each its own small PNG and a label), made as they are sent:
    the server reads `max_stream_items` (10,000), stores what the default rate limit
    lets through and answers every item it read."""

    def items() -> Iterator[bytes]:
        for n in range(1_000_000):
            buffer = io.BytesIO()
            Image.new("RGB", (8, 8), (n % 256, n // 256 % 256, n // 65536 % 256)).save(
                buffer, "PNG"
            )
            yield pb.SubmitFeedbackRequest(
                label="red", image=pb.Image(encoded=buffer.getvalue())
            ).SerializeToString()

    with grpc.insecure_channel(target) as channel:
        call = channel.stream_unary("/tlserve.v1.Classifier/StreamFeedback")
        try:
            reply = call(items(), timeout=120)
        except grpc.RpcError as error:
            return error.code().name
    response = pb.StreamFeedbackResponse.FromString(reply)
    refused = Counter(r.error_code for r in response.results if not r.accepted)
    reasons = ", ".join(f"{count} {code}" for code, count in refused.most_common())
    return (
        f"OK: {len(response.results)} items read, {response.accepted} stored, "
        f"{response.rejected} refused ({reasons})"
    )


def http_json_at_the_limit(http: str) -> str:
    return http_json_many_elements(http, 800_000)  # 4 MB: just under max_json_bytes


def http_json_many_elements(http: str, count: int = 6_000_000) -> str:
    body = (
        b'{"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": ['
        + str(count).encode()
        + b'], "data": ['
        + b",".join([b'"x"'] * count)
        + b"]}]}"
    )
    request = urllib.request.Request(
        f"{http}/v2/models/tlserve/infer",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}: {json.loads(error.read())['error'][:60]}"


def _call(target: str, method: str, payload: bytes) -> str:
    options = [("grpc.max_send_message_length", 2 * MESSAGE_LIMIT)]
    with grpc.insecure_channel(target, options=options) as channel:
        try:
            channel.unary_unary(method)(payload, timeout=120)
        except grpc.RpcError as error:
            return f"{error.code().name}: {(error.details() or '')[:60]}"
    return "OK"


def http_multipart_parts() -> Send:
    """24 parts of 60 MB (1.4 GB), chunked: no Content-Length to refuse it by."""
    boundary = "stress-boundary"
    part = bytes(60 * MB)
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n\r\n'.encode()
    chunks = [piece for _ in range(24) for piece in (head, part, b"\r\n")]
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = ("Content-Type", f"multipart/form-data; boundary={boundary}")
    return lambda base_url: _http_chunked(base_url, "/v1/predict", [content_type], chunks)


def http_gzip_bomb() -> Send:
    """About 1 MB of gzip that inflates to 1 GB of zeros."""
    bomb = _gzip_zeros(1024 * MB)
    headers = [("Content-Type", "image/png"), ("Content-Encoding", "gzip")]
    return lambda base_url: _http_chunked(base_url, "/v1/predict", headers, [bomb])


def http_gzip_bomb_in_a_part() -> Send:
    boundary = "stress-boundary"
    chunks = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n'.encode(),
        b"Content-Encoding: gzip\r\n\r\n",
        _gzip_zeros(1024 * MB),
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    content_type = ("Content-Type", f"multipart/form-data; boundary={boundary}")
    return lambda base_url: _http_chunked(base_url, "/v1/predict", [content_type], chunks)


def grpc_parallel_garbage(payload: bytes) -> Send:
    """Four Predicts of `payload` at once."""

    def send(target: str) -> str:
        with ThreadPoolExecutor(4) as pool:
            answers = pool.map(
                lambda _: _call(target, "/tlserve.v1.Classifier/Predict", payload), range(4)
            )
            return "; ".join(sorted(set(answers)))

    return send


def _gzip_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MB)
    return b"".join([compressor.compress(block) for _ in range(size // MB)] + [compressor.flush()])


def _http_chunked(
    base_url: str, path: str, headers: list[tuple[str, str]], chunks: list[bytes]
) -> str:
    """POST with a chunked body; sending stops when the server closes, then the answer is
    read."""
    host, port = base_url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=120) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        try:
            sock.sendall(head.encode())
            for chunk in chunks:
                sock.sendall(b"%x\r\n" % len(chunk))
                sock.sendall(chunk)
                sock.sendall(b"\r\n")
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            response = http.client.HTTPResponse(sock)
            response.begin()
            error = json.loads(response.read()).get("error", "")
        except (OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__} after {sent / MB:.1f} MB sent"
    return f"HTTP {response.status}: {error[:60]} ({sent / MB:.1f} MB sent)"


def ready(send: Send) -> Callable[[], Send]:
    """A case whose request is built as it is sent (its building is not the point)."""
    return lambda: send


# Each case prepares its payload (untimed) and returns what sends it.
CASES: dict[str, tuple[int, Callable[[], Send]]] = {
    "ModelInfer, 12M one-byte BYTES elements (60 MB)": (1, ready(infer_many_tiny_elements)),
    "Predict, 4M one-byte images": (1, ready(predict_many_tiny_images)),
    "StreamFeedback, 1M items": (1, ready(stream_many_items)),
    "HTTP infer, JSON with 6M elements (30 MB)": (1, ready(http_json_many_elements)),
    "HTTP infer, JSON with 800K elements (4 MB)": (1, ready(http_json_at_the_limit)),
    "HTTP predict, multipart 24 parts of 60 MB, chunked": (1, http_multipart_parts),
    "HTTP predict, 1 MB of gzip inflating to 1 GB": (1, http_gzip_bomb),
    "HTTP predict, gzip bomb inside a multipart part": (1, http_gzip_bomb_in_a_part),
    "Predict x4 at once, 60 MB of random bytes each": (
        4,
        lambda: grpc_parallel_garbage(os.urandom(60 * MB)),
    ),
    "Predict x4 at once, 30M unknown two-byte fields each": (
        4,
        lambda: grpc_parallel_garbage(b"\x78\x00" * (30 * MB)),
    ),
}


def run_case(name: str, in_flight: int, send: Send, registry_dir: Path) -> Result:
    metrics_port, http_port = free_port(), free_port()
    with server_process(
        registry_dir=str(registry_dir),
        data_dir=str(registry_dir.parent),
        metrics_port=str(metrics_port),
        http_port=str(http_port),
        max_message_bytes=str(MESSAGE_LIMIT),
    ) as (target, process):
        probe_latencies: list[float] = []
        _wait_ready(target)
        time.sleep(0.5)
        idle = rss(process.pid)
        peak = [idle]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss(process.pid))
                time.sleep(0.005)

        def probe() -> None:
            # Not kept: the store's growth is then the case's alone.
            request = pb.PredictRequest(
                images=[pb.Image(encoded=solid_image("red"))], do_not_keep=True
            )
            with grpc.insecure_channel(target) as channel:
                predict = channel.unary_unary("/tlserve.v1.Classifier/Predict")
                while not done.is_set():
                    started = time.perf_counter()
                    predict(request.SerializeToString(), timeout=30)
                    probe_latencies.append(time.perf_counter() - started)
                    time.sleep(0.02)

        threads = [threading.Thread(target=sample), threading.Thread(target=probe)]
        for thread in threads:
            thread.start()
        lag_before = lag_buckets(f"http://127.0.0.1:{metrics_port}/metrics")
        store_before = store_bytes(registry_dir.parent)
        started = time.perf_counter()
        address = f"http://127.0.0.1:{http_port}" if name.startswith("HTTP") else target
        answer = send(address)
        seconds = time.perf_counter() - started
        time.sleep(0.3)
        done.set()
        for thread in threads:
            thread.join()
        lag = lag_bound(lag_before, lag_buckets(f"http://127.0.0.1:{metrics_port}/metrics"))
        store_growth = (store_bytes(registry_dir.parent) - store_before) / 1024
    growth = (peak[0] - idle) / 2**20
    limit = 3 * MESSAGE_LIMIT * in_flight / 2**20
    return Result(
        case=name,
        in_flight=in_flight,
        answer=answer,
        seconds=round(seconds, 2),
        peak_rss_growth_mb=round(growth, 1),
        store_growth_kb=round(store_growth, 1),
        rss_limit_mb=limit,
        loop_lag_under_s=lag,
        probe_worst_ms=round(1000 * max(probe_latencies, default=0.0), 1),
        passed=growth <= limit and lag <= LAG_TARGET,
    )


def store_bytes(data_dir: Path) -> int:
    """The SQLite store's size on disk: the database and its write-ahead log."""
    return sum(path.stat().st_size for path in data_dir.glob("feedback.sqlite3*"))


def _wait_ready(target: str) -> None:
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as channel:
        while True:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                return
            except grpc.FutureTimeoutError:
                if time.monotonic() > deadline:
                    raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/stress.json")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="tlserve-stress-") as scratch:
        registry_dir = Path(scratch) / "registry"
        publish_colour_version(Registry.local(registry_dir))
        for name, (in_flight, prepare) in CASES.items():
            result = run_case(name, in_flight, prepare(), registry_dir)
            results.append(result)
            print(
                f"{result.case:<50} {result.answer[:44]:<46} {result.seconds:>6.2f}s "
                f"RSS +{result.peak_rss_growth_mb:>6.1f} MB (limit {result.rss_limit_mb:.0f}) "
                f"lag <= {result.loop_lag_under_s * 1000:>5.0f} ms  probe max "
                f"{result.probe_worst_ms:>6.1f} ms  {'ok' if result.passed else 'FAIL'}"
            )
    write_report(
        {
            "benchmark": "stress",
            "message_limit_bytes": MESSAGE_LIMIT,
            "targets": {
                "peak_rss_growth": "<= 3x message limit per request in flight",
                "loop_lag_seconds": LAG_TARGET,
            },
            "results": [asdict(r) for r in results],
        },
        args.output,
    )
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
