"""The serving half of tlserve, offline and end to end (what `make demo` runs for now).

Publishes a toy colour model into a fresh data dir, starts `tlserve-server` as its own
process, and, through the public client only: predicts, sends feedback by prediction
id, asks for label suggestions, publishes a new version and watches it go live with no
failed request, rolls back, shows /metrics, and shuts the server down cleanly. Exits
non-zero naming the step that failed. The data dir is kept for poking at with the CLI.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from clients import TlserveClient  # noqa: E402
from examples.colour_model import COLOURS, publish_colour_version  # noqa: E402
from server.registry import Registry  # noqa: E402

T = TypeVar("T")
DATA = ROOT / "demo-data"


def step(name: str, action: Callable[[], T]) -> T:
    print(f"\n== {name}")
    try:
        return action()
    except Exception as exc:
        print(f"demo failed at step '{name}': {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc


def png(rgb: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def main() -> int:
    shutil.rmtree(DATA, ignore_errors=True)
    registry = Registry(DATA / "registry")
    first = step("publish a first model version", lambda: publish_colour_version(registry))
    print(f"published {first}")
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "TLSERVE_DATA_DIR": str(DATA),
        "TLSERVE_HOST": "127.0.0.1",
        "TLSERVE_PORT": str(port),
        "TLSERVE_METRICS_PORT": str(metrics_port),
        "TLSERVE_REGISTRY_POLL_SECONDS": "0.2",
        "TLSERVE_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen([sys.executable, "-m", "server.main"], cwd=ROOT, env=env)
    target = f"127.0.0.1:{port}"
    try:
        with TlserveClient(target, timeout=10) as client:
            step("start tlserve-server", lambda: wait_for(_ready(client), "the server"))
            samples = {"red": png(COLOURS["red"]), "teal": png((20, 160, 170))}
            result = step("predict", lambda: client.predict(samples.values(), top_k=2))
            for name, prediction in zip(samples, result.predictions, strict=True):
                top = ", ".join(f"{c.label} {c.score:.2f}" for c in prediction.top)
                print(f"  {name:<5} -> {top}   (version {result.model_version})")
            teal = result.predictions[1]
            receipt = step(
                "send feedback by prediction id",
                lambda: client.submit_feedback("green", prediction_id=teal.prediction_id),
            )
            print(f"  stored sample {receipt.sample_id[:12]} as {receipt.label!r}")
            suggestions = step("ask what to label next", lambda: client.suggest_labels(1))
            print(f"  suggestions: {[s.prediction_id[:8] for s in suggestions]}")
            second = step(
                "publish a new version and watch it go live",
                lambda: _publish_and_wait(client, registry),
            )
            step("roll back", lambda: _rollback(client, registry, first))
            print(f"  serving {first} again (was {second})")
            step("scrape /metrics", lambda: _show_metrics(metrics_port))
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(30)
    if code != 0:
        print(f"demo failed at step 'shut down': server exited {code}", file=sys.stderr)
        return 1
    print(f"\ndone: server stopped cleanly. Data kept in {DATA} (TLSERVE_DATA_DIR).")
    return 0


def _ready(client: TlserveClient) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return client.get_model().serving
        except Exception:
            return False

    return ready


def _publish_and_wait(client: TlserveClient, registry: Registry) -> str:
    swapped = {"red": "blue", "green": "red", "blue": "green"}
    version = publish_colour_version(registry, answer_for=swapped, size=48)
    started = time.monotonic()
    wait_for(lambda: client.predict([png(COLOURS["red"])]).model_version == version, "the swap")
    print(f"  {version} answering after {time.monotonic() - started:.2f}s")
    return version


def _rollback(client: TlserveClient, registry: Registry, version: str) -> None:
    registry.set_current(version)
    wait_for(lambda: client.get_model().version == version, "the rollback")


def _show_metrics(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    wanted = ("tlserve_grpc_requests_total{", "tlserve_model_swaps_total", "tlserve_live_accuracy")
    for line in lines:
        if line.startswith(wanted):
            print(f"  {line}")


if __name__ == "__main__":
    raise SystemExit(main())
