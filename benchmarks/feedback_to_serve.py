"""Feedback-to-serve benchmark: 100 new labels on top of 1,000 and 10,000 labeled samples.

    python benchmarks/feedback_to_serve.py [--sizes 1000 10000] [--output FILE]

Head-only retraining on the frozen MNIST ConvNet backbone (`tlserve-trainer pretrain`),
with the features of the old samples already cached, as in steady state. A real
`tlserve-server` process serves and the real trainer loop runs (default settings and
promotion gate); this process sends the 100 labels over gRPC (StreamFeedback) and polls
until the server answers with the version trained on them. Two configurations: the
defaults (the trainer and the server each poll every 2 s: the headline) and both polling
every 0.1 s, which shows what the work itself takes. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import server_process, write_report  # noqa: E402
from examples.odd_even import parity, png  # noqa: E402
from tlserve.clients import FeedbackItem, TlserveClient  # noqa: E402
from tlserve.server.registry import Registry  # noqa: E402
from tlserve.server.store.sqlite import SqliteFeedbackStore  # noqa: E402
from tlserve.trainer.loop import TrainerLoop  # noqa: E402
from tlserve.trainer.mnist import load_digits  # noqa: E402
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


# How often the trainer looks for new labels and the server for a new version: the
# defaults (what a user gets), and polling at 0.1 s to show what is left without the waits.
CONFIGURATIONS = {
    "default": {"trainer_poll_seconds": 2.0, "registry_poll_seconds": 2.0},
    "fast polling": {"trainer_poll_seconds": 0.1, "registry_poll_seconds": 0.1},
}


def measure(size: int, model: Path, scratch: Path, configuration: str) -> dict[str, Any]:
    """The real trainer loop (default settings and promotion gate but its poll interval)
    in a thread and a real `tlserve-server` process (default settings but its registry
    poll): `size` labels train a first version, then 100 more are sent and timed until the
    server answers with the version trained on them."""
    polls = CONFIGURATIONS[configuration]
    images, digits = load_digits()
    pool, truth = zip(*variants(images, digits, size + NEW_LABELS), strict=True)
    settings = TrainerSettings(
        data_dir=scratch,
        backbone=str(model),
        backbone_cut_layer=CUT_LAYER,
        backbone_weights="none",
        metrics_port=None,
        poll_seconds=polls["trainer_poll_seconds"],
    )
    store = SqliteFeedbackStore(scratch / "feedback.sqlite3")
    for i in range(size):  # steady state: old samples labeled, a version serving
        store.add_label(principal="test", image=png(pool[i]), label=truth[i], source="setup")
    store.approve_labels(sorted(set(truth)), "benchmark")  # one labeler: its classes let in
    loop = TrainerLoop(settings, store, Registry.local(settings.registry_path), None)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run_forever, args=(stop,))
    thread.start()
    try:
        with (
            server_process(
                data_dir=str(scratch), registry_poll_seconds=str(polls["registry_poll_seconds"])
            ) as (target, _),
            TlserveClient(target, timeout=60) as client,
        ):
            _wait(lambda: client.get_model().serving, timeout=600)
            before = client.get_model().version
            probe = png(pool[0])
            started = time.perf_counter()
            receipt = client.stream_feedback(
                FeedbackItem(truth[i], image=png(pool[i]), source="bench")
                for i in range(size, size + NEW_LABELS)
            )
            assert receipt.accepted == NEW_LABELS
            acknowledged = time.perf_counter()
            _wait(lambda: client.predict([probe], keep=False).model_version != before)
            serving = time.perf_counter()
            version = client.predict([probe], keep=False).model_version
    finally:
        stop.set()
        thread.join(300)
        store.close()
    # The run that made the version now answering (a run may have started before all 100
    # labels arrived, and a later one may have been refused by the gate).
    records = [json.loads(p.read_text()) for p in (scratch / "trainer" / "runs").glob("*/*.json")]
    (record,) = [r for r in records if r.get("version") == version]
    dataset = record["dataset"]
    return {
        "configuration": configuration,
        **polls,
        "labeled_before": size,
        "submit_100_labels_s": acknowledged - started,
        **{f"trainer_{stage}_s": seconds for stage, seconds in record["timings"].items()},
        "feedback_to_serve_s": serving - acknowledged,
        "epochs_run": float(record["metrics"]["training"]["epochs_run"]),
        # Of the 100: how many the version answering first was trained on.
        "new_labels_in_it": float(dataset["train"] + dataset["holdout"] - size),
        "runs": len(records) - 1,
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
            for configuration in CONFIGURATIONS:
                scratch = Path(scratch_root) / f"n{size}-{configuration.replace(' ', '-')}"
                scratch.mkdir()
                results.append(measure(size, model, scratch, configuration))
                print(f"{configuration}, {size:,} labeled: {results[-1]}", flush=True)
    numbers = {k for row in results for k, v in row.items() if isinstance(v, float)}
    keys = sorted(numbers - {"trainer_poll_seconds", "registry_poll_seconds"})
    heading = "".join(f"{r['configuration'][:8]} {r['labeled_before']:>6,}" for r in results)
    print(f"\n{'seconds':<26}{heading}")
    for key in keys:
        print(f"{key:<26}" + "".join(f"{row.get(key, 0):>15.2f}" for row in results))
    report = {
        "benchmark": "feedback_to_serve",
        "new_labels": NEW_LABELS,
        "backbone": "MNIST ConvNet (tlserve-trainer pretrain), head-only, old features cached",
        "headline": "configuration 'default': the trainer's and the server's default polls "
        "and promotion gate",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
    }
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
