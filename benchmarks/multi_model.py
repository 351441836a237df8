"""Many-models benchmark: five head-only models on one MobileNetV2-sized backbone against
one model, on one server.

    python benchmarks/multi_model.py [--seconds 8] [--rounds 2] [--concurrency 32]
                                     [--output FILE]

Two registries hold the same backbone (benchmarks/models.py, random weights, 224x224
uint8): one with a single model, one with the default model and four named models (each
its own softmax head). Each round starts a fresh `tlserve-server` (free ports, temporary
data dir, default settings) on each registry in turn, sends single-image Predicts from
`--concurrency` closed-loop clients for `--seconds` (for five models, spread evenly over
them), and reads the server's resident memory (/proc VmRSS) once it has answered. The
rounds interleave the two servers so drift on the machine hits both.

Reported: images/s per server and round, `throughput_5_vs_1` (median of five models'
rate over median of one model's; target >= 0.9) and `rss_mb_per_extra_model` (RSS of the
five-model server minus the one-model server, over four; target <= 5 MB).

Prints a table and writes JSON (default benchmarks/results/models.json).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import server_process, write_report  # noqa: E402
from benchmarks.models import publish_mobilenet_models  # noqa: E402
from tlserve.proto import classifier_pb2 as pb  # noqa: E402
from tlserve.proto import classifier_pb2_grpc as pb_grpc  # noqa: E402

SIZE = 224
CLASSES = 10
NAMED = ["task-a", "task-b", "task-c", "task-d"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wait_ready(target: str, models: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        for model in models:
            while True:
                try:
                    stub.GetModel(pb.GetModelRequest(model=model), timeout=2)
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("tlserve-server did not become ready") from None
                    time.sleep(0.2)


async def closed_loop(
    target: str, models: list[str], concurrency: int, seconds: float
) -> tuple[float, int]:
    rng = np.random.default_rng(1)
    images = [
        pb.Image(
            tensor=pb.Tensor(
                dtype=pb.UINT8,
                shape=[SIZE, SIZE, 3],
                data=rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8).tobytes(),
            )
        )
        for _ in range(16)
    ]
    done, errors = 0, 0
    stop_at = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.ClassifierStub(channel)

        async def worker(offset: int) -> None:
            nonlocal done, errors
            n = offset
            while time.perf_counter() < stop_at:
                request = pb.PredictRequest(
                    images=[images[n % len(images)]], top_k=1, model=models[n % len(models)]
                )
                n += 1
                try:
                    await stub.Predict(request, timeout=30)
                    done += 1
                except grpc.aio.AioRpcError:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / (time.perf_counter() - started), errors


def measure(registry: Path, models: list[str], args: argparse.Namespace) -> dict[str, float]:
    with server_process(registry_dir=str(registry), execution_provider="cpu") as (target, proc):
        wait_ready(target, models)
        asyncio.run(closed_loop(target, models, args.concurrency, 2.0))  # warm
        rate, errors = asyncio.run(closed_loop(target, models, args.concurrency, args.seconds))
        return {"images_per_second": round(rate, 1), "errors": errors, "rss_mb": rss_mb(proc.pid)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/models.json")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"one_model": [], "five_models": []}
    with tempfile.TemporaryDirectory(prefix="tlserve-models-") as scratch:
        one, five = Path(scratch) / "one", Path(scratch) / "five"
        publish_mobilenet_models(one, SIZE, CLASSES)
        publish_mobilenet_models(five, SIZE, CLASSES, NAMED)
        setups = {"one_model": [""], "five_models": ["", *NAMED]}
        folders = {"one_model": one, "five_models": five}
        for round_ in range(args.rounds):
            for kind in ("one_model", "five_models"):
                result = measure(folders[kind], setups[kind], args)
                runs[kind].append(result)
                print(f"round {round_ + 1} {kind:12} {result}", flush=True)
    median = {k: statistics.median(r["images_per_second"] for r in v) for k, v in runs.items()}
    rss = {k: statistics.median(r["rss_mb"] for r in v) for k, v in runs.items()}
    ratio = median["five_models"] / median["one_model"]
    per_extra = (rss["five_models"] - rss["one_model"]) / len(NAMED)
    print(f"\n{'server':12} {'img/s (median)':>15} {'RSS MB':>8}")
    for kind in runs:
        print(f"{kind:12} {median[kind]:>15.1f} {rss[kind]:>8.1f}")
    print(f"throughput_5_vs_1 = {ratio:.3f} (target >= 0.9)")
    print(f"rss_mb_per_extra_model = {per_extra:.2f} (target <= 5)")
    report = {
        "benchmark": "models",
        "throughput_5_vs_1": round(ratio, 3),
        "rss_mb_per_extra_model": round(per_extra, 2),
        "targets": {"throughput_5_vs_1": ">= 0.9", "rss_mb_per_extra_model": "<= 5"},
        "median_images_per_second": median,
        "median_rss_mb": rss,
        "runs": runs,
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "requests": "single-image uint8 224x224 Predict, evenly over the models",
            "server": "default settings, execution_provider=cpu",
        },
    }
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
