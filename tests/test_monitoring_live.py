"""Live monitoring end to end: the trainer calibrates a real head on MNIST digits and writes
a drift sketch beside it; the server estimates the accuracy of unlabeled in-distribution
traffic from calibrated confidence, and raises the drift alarm when the digits come
inverted, over gRPC, HTTP and metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from examples.odd_even import Task, png
from tests.support import ServerThread, http_call, scrape, tlserve, value
from tests.training import on_pretrained
from tlserve.clients import FeedbackItem, ModelSummary, TlserveClient
from tlserve.clients.errors import FailedPrecondition
from tlserve.server.monitoring.drift import REFERENCE_FILE, DriftReference
from tlserve.server.registry import Registry
from tlserve.server.store.sqlite import SqliteFeedbackStore
from tlserve.trainer.pipeline import Trainer

pytestmark = pytest.mark.slow  # TensorFlow: a real training run

LABELED = 500


def digit(d: int) -> str:
    return str(d)


@pytest.mark.timeout(600)
def test_estimated_accuracy_and_drift_on_live_digits(tmp_path: Path, pretrained: Path) -> None:
    task = Task.load(answer=digit)
    server = ServerThread(tmp_path).start()
    try:
        with TlserveClient(server.target, timeout=60) as client:
            labeled = task.pool[:LABELED]
            receipt = client.stream_feedback(
                FeedbackItem(task.truth(i), image=png(task.images[i])) for i in labeled
            )
            assert receipt.accepted == LABELED
            store = SqliteFeedbackStore(tmp_path / "feedback.sqlite3")
            try:
                registry = Registry.local(tmp_path / "registry")
                record = Trainer(on_pretrained(tmp_path, pretrained), store, registry).run_once()
            finally:
                store.close()
            assert record.version, record.reasons
            served = wait_for(client, record.version)
            calibration = served.card["calibration"]
            assert calibration["samples"] == served.card["dataset"]["holdout"] > 20
            assert calibration["nll_after"] <= calibration["nll_before"]
            manifest = registry.model_manifest(record.version)
            sketch = DriftReference.from_bytes(
                registry.read_version_file(manifest, REFERENCE_FILE),
                feature_dim=manifest.feature_dim,
                what="test",
            )
            assert served.card["drift_reference"]["components"] == sketch.components

            assert served.monitoring is not None
            assert served.monitoring.estimated_from == 0
            assert served.monitoring.drift_state == "collecting"

            # 1,000 digits nobody labeled, from the training distribution.
            right = 0
            for start in range(0, len(task.evaluation), 100):
                chunk = task.evaluation[start : start + 100]
                result = client.predict([png(task.images[i]) for i in chunk], top_k=1)
                right += sum(
                    p.label == task.truth(i) for p, i in zip(result.predictions, chunk, strict=True)
                )
            actual = right / len(task.evaluation)
            monitoring = client.get_model().monitoring
            assert monitoring is not None
            assert monitoring.estimated_from == 1000
            assert monitoring.temperature == pytest.approx(calibration["temperature"])
            print(f"\nactual {actual:.3f}, estimated {monitoring.estimated_accuracy:.3f}")
            assert abs(monitoring.estimated_accuracy - actual) <= 0.05
            assert monitoring.drift_state == "ok", monitoring
            # A test per 25 new rows, which arrive in batches of 8.
            assert monitoring.drift_tested_windows >= 800 // 32

            # The same digits inverted (white on black becomes black on white).
            inverted = 0
            while client.get_model().monitoring.drift_state != "drift":  # type: ignore[union-attr]
                chunk = task.evaluation[inverted : inverted + 25]
                client.predict([png(255 - task.images[i]) for i in chunk], keep=False)
                inverted += 25
                assert inverted <= 500, "500 inverted digits raised no drift alarm"
            print(f"drift alarm after {inverted} inverted digits")

        reply = http_call(f"{server.http_url}/v1/models/tlserve/model")
        assert reply.status == 200
        over_http = json.loads(reply.body)["monitoring"]
        assert over_http["drift_state"] == "drift" and over_http["drift_p_value"] < 0.01
        assert over_http["estimated_from"] == 1000
        status = tlserve("status", target=server.target)
        assert status.returncode == 0, status.stderr
        assert (
            "estimated accuracy 0." in status.stdout and "on its last 1000 answers" in status.stdout
        )
        assert "drift: drift (p " in status.stdout
        samples = scrape(server)
        labels = {"model": "tlserve", "version": record.version}
        assert value(samples, "tlserve_drift_alarm", **labels) == 1.0
        assert value(samples, "tlserve_drift_p_value", **labels) < 0.01
        assert 0 < value(samples, "tlserve_estimated_accuracy", **labels) < 1
    finally:
        server.stop()


def wait_for(client: TlserveClient, version: str, timeout: float = 60.0) -> ModelSummary:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            served = client.get_model()
        except FailedPrecondition:  # nothing served yet
            served = None
        if served is not None and served.version == version:
            return served
        time.sleep(0.1)
    raise TimeoutError(f"version {version} was not served within {timeout:.0f}s")
