"""Feedback intake benchmark: acknowledged (durably committed) submissions per second.

    python benchmarks/feedback.py [--seconds S] [--output FILE]

For each store (SQLite in a temp dir; PostgreSQL at TLSERVE_BENCH_POSTGRES or
127.0.0.1:5432/test when reachable) a real `tlserve-server` process is started and fed
small PNG images: single SubmitFeedback calls one at a time and 8 at a time, and one
StreamFeedback of many items. These runs switch the per-principal feedback limit off
(`feedback_rate=0`): they measure what the store acknowledges, and every request comes
from one anonymous principal, which the default limit (50 items/s after a burst of 1,000)
would cap. One more run on SQLite keeps the default limit and reports what a single
principal gets and how many submissions were refused with RESOURCE_EXHAUSTED. Prints a
table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import psycopg
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import server_process, write_report  # noqa: E402
from tlserve.proto import classifier_pb2 as pb  # noqa: E402
from tlserve.proto import classifier_pb2_grpc as pb_grpc  # noqa: E402

POSTGRES = os.environ.get("TLSERVE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def png(n: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (n % 256, n // 256 % 256, n // 65536 % 256)).save(buffer, "PNG")
    return buffer.getvalue()


def request(n: int, run: str) -> pb.SubmitFeedbackRequest:
    return pb.SubmitFeedbackRequest(
        image=pb.Image(encoded=png(n)), label=f"class{n % 10}", idempotency_key=f"{run}-{n}"
    )


async def single(
    stub: pb_grpc.ClassifierStub, concurrency: int, seconds: float
) -> tuple[float, int]:
    """(acknowledged submissions per second, submissions refused by the rate limit)."""
    run, counter, done, refused = uuid.uuid4().hex[:8], iter(range(10**9)), 0, 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, refused
        while time.perf_counter() < stop_at:
            try:
                await stub.SubmitFeedback(request(next(counter), run), timeout=30)
                done += 1
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                refused += 1
                await asyncio.sleep(0.01)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started), refused


async def streamed(stub: pb_grpc.ClassifierStub, items: int) -> float:
    run = uuid.uuid4().hex[:8]
    requests = [request(n, run) for n in range(items)]
    started = time.perf_counter()
    response = await stub.StreamFeedback(iter(requests), timeout=600)
    elapsed = time.perf_counter() - started
    assert response.accepted == items, response.rejected
    return items / elapsed


async def measure(target: str, seconds: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        stub = pb_grpc.ClassifierStub(channel)
        await single(stub, 1, 0.5)
        return {
            "single, 1 in flight": (await single(stub, 1, seconds))[0],
            "single, 8 in flight": (await single(stub, 8, seconds))[0],
            "stream of 2000": await streamed(stub, 2000),
        }


async def measure_default_limit(target: str, seconds: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        rate, refused = await single(pb_grpc.ClassifierStub(channel), 8, seconds)
        return {"single, 8 in flight": rate, "refused": refused, "seconds": seconds}


def run_store(store_url: str, data_dir: Path, seconds: float) -> dict[str, float]:
    with server_process(data_dir=str(data_dir), store_url=store_url, feedback_rate="0") as (
        target,
        _,
    ):
        return asyncio.run(measure(target, seconds))


def postgres_url() -> str | None:
    try:
        with psycopg.connect(POSTGRES, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError:
        return None
    return POSTGRES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / "feedback.json"
    )
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="tlserve-feedback-") as scratch:
        results["sqlite"] = run_store("", Path(scratch), args.seconds)
    with (
        tempfile.TemporaryDirectory(prefix="tlserve-feedback-") as scratch,
        server_process(data_dir=scratch) as (target, _),
    ):
        limited = asyncio.run(measure_default_limit(target, max(args.seconds, 25.0)))
    url = postgres_url()
    if url is None:
        print(f"PostgreSQL not reachable at {POSTGRES}: skipped")
    else:
        # Idempotency keys are unique per run, so earlier runs' rows do not interfere.
        with tempfile.TemporaryDirectory(prefix="tlserve-feedback-") as scratch:
            results["postgresql"] = run_store(url, Path(scratch), args.seconds)
    print(f"\n{'store':<12}{'mode':<24}{'submissions/s':>15}")
    print("-" * 51)
    for store, rows in results.items():
        for mode, rate in rows.items():
            print(f"{store:<12}{mode:<24}{rate:>15.1f}")
    print(
        f"\ndefault limit (50/s, burst 1,000), one principal, 8 in flight for "
        f"{limited['seconds']:.0f} s: {limited['single, 8 in flight']:.1f}/s acknowledged, "
        f"{limited['refused']} refused with RESOURCE_EXHAUSTED"
    )
    report = {
        "benchmark": "feedback",
        "unit": "acknowledged submissions per second (each durably committed)",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
        },
        "results": results,
        "default_rate_limit": limited,
        "settings": {
            "results": "feedback_rate=0 (no per-principal limit: the store's intake), "
            "otherwise the server's defaults",
            "default_rate_limit": "the server's defaults (feedback_rate 50/s, burst 1,000), "
            "SQLite, one anonymous principal",
            "seconds": args.seconds,
        },
    }
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
