"""Serving benchmark: in-process ONNX Runtime (the limit) beside tlserve over gRPC.

    python benchmarks/serving.py [--quick] [--seconds S] [--output FILE]

A MobileNetV2-sized model (benchmarks/models.py) is published into a fresh registry
and served by a real `tlserve-server` process; this process is the client. Scenarios:

- in-process: ONNX Runtime alone on batches of max_batch_size and of 1 image;
- batched requests (max_batch_size images per request), closed loop at saturation;
- single-image requests through the dynamic batcher, closed loop at saturation and
  open loop at fixed offered loads (fractions of the in-process limit);
- each with uint8 tensor input and with JPEG input (the server decodes).

Prints a table and writes JSON (default benchmarks/results/serving.json).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import server_process, write_report  # noqa: E402
from benchmarks.models import publish_mobilenet_models  # noqa: E402
from tlserve.proto import classifier_pb2 as pb  # noqa: E402
from tlserve.proto import classifier_pb2_grpc as pb_grpc  # noqa: E402
from tlserve.server.registry import Registry  # noqa: E402

SIZE = 224
REQUEST_BATCH = 32  # images per request in the "batched requests" scenarios
IN_PROCESS_BATCHES = (1, 4, 8, 16, 32)
CLASSES = 10


@dataclass
class Row:
    scenario: str
    input: str
    images_per_request: int
    mode: str
    offered_images_per_s: float | None
    images_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    vs_limit: float | None = None


def in_process_limit(registry: Registry, batch: int, seconds: float) -> float:
    version = registry.current()
    assert version is not None
    manifest = registry.model_manifest(version)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    backbone = ort.InferenceSession(
        registry.read_backbone_onnx(manifest.backbone_id),
        options,
        providers=["CPUExecutionProvider"],
    )
    head = ort.InferenceSession(
        registry.read_version_file(manifest, "head.onnx"),
        options,
        providers=["CPUExecutionProvider"],
    )
    pixels = np.random.default_rng(0).integers(0, 255, (batch, SIZE, SIZE, 3), dtype=np.uint8)

    def run() -> None:
        (features,) = backbone.run(["features"], {"images": pixels})
        head.run(["probabilities"], {"features": features})

    run()
    started, images = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        run()
        images += batch
    return images / (time.perf_counter() - started)


def sample_images(count: int) -> tuple[list[pb.Image], list[pb.Image]]:
    rng = np.random.default_rng(1)
    tensors, jpegs = [], []
    for _ in range(count):
        # Smooth random images compress like photos (~10 KB at 224x224), not like noise.
        small = rng.integers(0, 255, (14, 14, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        pixels = np.asarray(image)
        tensors.append(
            pb.Image(tensor=pb.Tensor(dtype=pb.UINT8, shape=[SIZE, SIZE, 3], data=pixels.tobytes()))
        )
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        jpegs.append(pb.Image(encoded=buffer.getvalue()))
    return tensors, jpegs


def wait_ready(target: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until the server answers GetModel (it loads the model first)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        while True:
            try:
                stub.GetModel(pb.GetModelRequest(), timeout=2)
                return
            except grpc.RpcError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tlserve-server did not become ready") from None
                time.sleep(0.2)


def percentile(latencies: list[float], q: float) -> float | None:
    return float(np.percentile(latencies, q) * 1000) if latencies else None


async def closed_loop(
    stub: pb_grpc.ClassifierStub,
    images: list[pb.Image],
    per_request: int,
    concurrency: int,
    seconds: float,
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    done_images = 0
    stop_at = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal errors, done_images
        index = offset
        while time.perf_counter() < stop_at:
            chosen = [images[(index + i) % len(images)] for i in range(per_request)]
            index += per_request
            sent = time.perf_counter()
            try:
                await stub.Predict(pb.PredictRequest(images=chosen, top_k=1), timeout=30)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - sent)
            done_images += per_request

    started = time.perf_counter()
    await asyncio.gather(*(worker(i * 7) for i in range(concurrency)))
    return done_images / (time.perf_counter() - started), latencies, errors


async def open_loop(
    stub: pb_grpc.ClassifierStub, images: list[pb.Image], rate: float, seconds: float
) -> tuple[float, list[float], int]:
    """Single-image requests at a fixed rate, whatever the responses do.

    Latency counts from the scheduled send time, so queueing is not hidden
    (no coordinated omission)."""
    latencies: list[float] = []
    errors = 0
    interval = 1.0 / rate
    total = int(rate * seconds)
    started = time.perf_counter()

    async def one(index: int, scheduled: float) -> None:
        nonlocal errors
        try:
            await stub.Predict(
                pb.PredictRequest(images=[images[index % len(images)]], top_k=1), timeout=30
            )
        except grpc.aio.AioRpcError:
            errors += 1
            return
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    for index in range(total):
        scheduled = started + index * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    return len(latencies) / (time.perf_counter() - started), latencies, errors


async def run_scenarios(
    target: str,
    tensors: list[pb.Image],
    jpegs: list[pb.Image],
    *,
    limit: float,
    seconds: float,
    quick: bool,
) -> list[Row]:
    rows: list[Row] = []
    options = [
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.max_receive_message_length", 64 << 20),
    ]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        for name, images in (("uint8", tensors), ("jpeg", jpegs)):
            await closed_loop(stub, images, REQUEST_BATCH, 2, 1.0)  # warm the path
            rate, latencies, errors = await closed_loop(stub, images, REQUEST_BATCH, 3, seconds)
            rows.append(
                Row(
                    "batched requests",
                    name,
                    REQUEST_BATCH,
                    "saturation (3 in flight)",
                    None,
                    rate,
                    percentile(latencies, 50),
                    percentile(latencies, 99),
                    errors,
                )
            )
            rate, latencies, errors = await closed_loop(stub, images, 1, 64, seconds)
            rows.append(
                Row(
                    "single-image requests",
                    name,
                    1,
                    "saturation (64 in flight)",
                    None,
                    rate,
                    percentile(latencies, 50),
                    percentile(latencies, 99),
                    errors,
                )
            )
            fractions = (0.25, 0.5) if quick else (0.25, 0.5, 0.75)
            for fraction in fractions:
                offered = limit * fraction
                rate, latencies, errors = await open_loop(stub, images, offered, seconds)
                rows.append(
                    Row(
                        "single-image requests",
                        name,
                        1,
                        f"open loop {int(fraction * 100)}% of limit",
                        offered,
                        rate,
                        percentile(latencies, 50),
                        percentile(latencies, 99),
                        errors,
                    )
                )
    return rows


def print_table(rows: list[Row], in_process: dict[int, float], limit: float, best: int) -> None:
    print("\nin-process ONNX Runtime (backbone + head), images/s by batch size:")
    print("  " + "  ".join(f"batch {b}: {rate:.1f}" for b, rate in in_process.items()))
    print(
        f"limit: {limit:.1f} images/s (batch {best}); the server ran with max_batch_size={best}\n"
    )
    header = (
        f"{'scenario':<24}{'input':<7}{'mode':<30}{'offered/s':>10}{'images/s':>10}"
        f"{'x limit':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        offered = f"{row.offered_images_per_s:.0f}" if row.offered_images_per_s else "-"
        p50 = f"{row.p50_ms:.1f}" if row.p50_ms is not None else "-"
        p99 = f"{row.p99_ms:.1f}" if row.p99_ms is not None else "-"
        print(
            f"{row.scenario:<24}{row.input:<7}{row.mode:<30}{offered:>10}"
            f"{row.images_per_s:>10.1f}{row.vs_limit or 0:>9.2f}{p50:>9}{p99:>9}{row.errors:>8}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="duration of each scenario")
    parser.add_argument("--quick", action="store_true", help="shorter run with fewer load points")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / "serving.json"
    )
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds

    with tempfile.TemporaryDirectory(prefix="tlserve-bench-") as scratch:
        registry_dir = Path(scratch) / "registry"
        registry = publish_mobilenet_models(registry_dir, SIZE, CLASSES)
        in_process = {b: in_process_limit(registry, b, seconds) for b in IN_PROCESS_BATCHES}
        best = max(in_process, key=lambda b: in_process[b])
        tensors, jpegs = sample_images(64)
        with server_process(
            registry_dir=str(registry_dir),
            execution_provider="cpu",
            max_batch_size=str(best),
            max_queue_size="4096",
        ) as (target, process):
            wait_ready(target, process)
            rows = asyncio.run(
                run_scenarios(
                    target,
                    tensors,
                    jpegs,
                    limit=in_process[best],
                    seconds=seconds,
                    quick=args.quick,
                )
            )
        # Measured again after the server ran: this machine's speed drifts, and the
        # ratio is taken against the best in-process figure seen (the conservative way).
        after = in_process_limit(registry, best, seconds)
    limit = max(in_process[best], after)

    for row in rows:
        row.vs_limit = row.images_per_s / limit
    print_table(rows, in_process, limit, best)

    report = {
        "benchmark": "serving",
        "model": (
            f"MobileNetV2-sized backbone ({SIZE}x{SIZE}, 1280 features, random weights)"
            f" + {CLASSES}-class head"
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "grpcio": grpc.__version__,
            "providers": ["CPUExecutionProvider"],
        },
        "server_max_batch_size": best,
        "request_batch": REQUEST_BATCH,
        "seconds_per_scenario": seconds,
        "in_process_images_per_s_by_batch": in_process,
        "in_process_after_server": after,
        "limit_images_per_s": limit,
        "rows": [asdict(row) for row in rows],
    }
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
