"""Feedback-to-serve benchmark: 100 new labels on top of 1,000 and 10,000 labeled samples.

    python benchmarks/feedback_to_serve.py [--sizes 1000 10000] [--output FILE]

Head-only retraining on the frozen MNIST ConvNet backbone (`tlserve-trainer pretrain`),
with the features of the old samples already cached, as in steady state. A real
`tlserve-server` process serves; this process sends the 100 labels over gRPC
(StreamFeedback), runs one trainer run, and polls until the server answers with the new
version. Each stage is timed. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import server_process, write_report  # noqa: E402
from examples.odd_even import parity, png  # noqa: E402
from tlserve.clients import FeedbackItem, TlserveClient  # noqa: E402
from tlserve.server.registry import Registry  # noqa: E402
from tlserve.server.store.sqlite import SqliteFeedbackStore  # noqa: E402
from tlserve.trainer.mnist import load_digits  # noqa: E402
from tlserve.trainer.pipeline import Trainer  # noqa: E402
from tlserve.trainer.pretrain import CUT_LAYER, pretrain_digits  # noqa: E402
from tlserve.trainer.settings import TrainerSettings  # noqa: E402

NEW_LABELS = 100


def variants(images: np.ndarray, digits: np.ndarray, count: int) -> list[tuple[np.ndarray, str]]:
    """`count` distinct labeled digits: the originals in a shuffled order (the file is sorted
    by digit, so a prefix would hold one class), then shifted copies (new content, same class)."""
    order = np.random.default_rng(0).permutation(len(images))
    out: list[tuple[np.ndarray, str]] = []
    shift = 0
    while len(out) < count:
        for i in order[: count - len(out)]:
            image = np.roll(images[i], shift, axis=1) if shift else images[i]
            out.append((image, parity(int(digits[i]))))
        shift += 1
    return out


def measure(size: int, model: Path, scratch: Path) -> dict[str, float]:
    images, digits = load_digits()
    pool, truth = zip(*variants(images, digits, size + NEW_LABELS), strict=True)
    settings = TrainerSettings(
        data_dir=scratch,
        backbone=str(model),
        backbone_cut_layer=CUT_LAYER,
        backbone_weights="none",
        max_regression=1.0,
        metrics_port=None,
    )
    store = SqliteFeedbackStore(scratch / "feedback.sqlite3")
    registry = Registry.local(settings.registry_path)
    trainer = Trainer(settings, store, registry)
    for i in range(size):  # steady state: old samples labeled, features cached, a version serves
        store.add_label(principal="test", image=png(pool[i]), label=truth[i], source="setup")
    store.approve_labels(sorted(set(truth)), "benchmark")  # one labeler: its classes let in
    assert trainer.run_once("setup").result == "promoted"

    try:
        with (
            server_process(data_dir=str(scratch), registry_poll_seconds="0.1") as (target, _),
            TlserveClient(target, timeout=60) as client,
        ):
            _wait(lambda: client.get_model().serving)
            before = client.get_model().version
            probe = png(pool[0])
            started = time.perf_counter()
            receipt = client.stream_feedback(
                FeedbackItem(truth[i], image=png(pool[i]), source="bench")
                for i in range(size, size + NEW_LABELS)
            )
            assert receipt.accepted == NEW_LABELS
            acknowledged = time.perf_counter()
            record = trainer.run_once("benchmark")
            assert record.result == "promoted", record.reasons
            published = time.perf_counter()
            _wait(lambda: client.predict([probe], keep=False).model_version != before)
            serving = time.perf_counter()
    finally:
        store.close()
    return {
        "labeled_before": size,
        "submit_100_labels_s": acknowledged - started,
        **{f"trainer_{stage}_s": seconds for stage, seconds in record.timings.items()},
        "trainer_total_s": published - acknowledged,
        "swap_s": serving - published,
        "feedback_to_serve_s": serving - acknowledged,
        "epochs_run": float(record.metrics["training"]["epochs_run"]),
    }


def _wait(condition: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():  # type: ignore[operator]
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / "feedback_to_serve.json"
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="tlserve-f2s-") as scratch_root:
        model = Path(scratch_root) / "mnist_convnet.keras"
        pretrain_digits(model)
        for size in args.sizes:
            scratch = Path(scratch_root) / f"n{size}"
            scratch.mkdir()
            results.append(measure(size, model, scratch))
    keys = sorted({k for row in results for k in row} - {"labeled_before"})
    print(f"\n{'seconds':<26}" + "".join(f"{row['labeled_before']:>12,}" for row in results))
    for key in keys:
        print(f"{key:<26}" + "".join(f"{row.get(key, 0):>12.2f}" for row in results))
    report = {
        "benchmark": "feedback_to_serve",
        "new_labels": NEW_LABELS,
        "backbone": "MNIST ConvNet (tlserve-trainer pretrain), head-only, old features cached",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
    }
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
