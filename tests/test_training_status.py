"""The trainer's state, as users see it through the client: before any trainer, while it
waits for labels (and what Predict and SuggestLabels then say), after a promotion; and a
skipped run is not repeated until the labels change."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from tests.support import ServerThread, colour_png, http_call, solid_image
from tlserve.clients import TlserveClient
from tlserve.server.registry import Registry
from tlserve.server.store.sqlite import SqliteFeedbackStore
from tlserve.trainer.loop import TrainerLoop
from tlserve.trainer.metrics import TrainerMetrics
from tlserve.trainer.settings import TrainerSettings

pytestmark = pytest.mark.slow  # TensorFlow: the trainer loop


def failure(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code(), info.value.details()


@pytest.mark.timeout(600)
def test_the_trainer_state_is_visible_and_skipped_runs_do_not_repeat(tmp_path: Path) -> None:
    server = ServerThread(tmp_path, keep_max_per_second=0.0).start()
    settings = TrainerSettings(
        data_dir=tmp_path,
        backbone="MobileNetV2",
        backbone_weights="none",
        input_size=32,
        epochs=20,
        min_new_labels=3,
        train_every_seconds=0.5,
        poll_seconds=0.05,
        metrics_port=None,
    )
    store = SqliteFeedbackStore(tmp_path / "feedback.sqlite3")
    metrics = TrainerMetrics(CollectorRegistry())
    loop = TrainerLoop(settings, store, Registry.local(settings.registry_path), metrics)
    runs = tmp_path / "trainer" / "runs"
    try:
        with TlserveClient(server.target) as client:
            unknown = client.training_status()
            assert unknown.state == "unknown" and unknown.last_run is None
            assert "tlserve-trainer run" in unknown.detail

            for i in range(4):
                client.submit_feedback("red", image=colour_png((220, 30, 30), i))
            assert loop.due() == "4 new labels"
            skipped = loop.run_once(loop.due() or "")
            assert skipped.result == "skipped"
            status = client.training_status()
            assert status.state == "waiting" and status.last_run is not None
            assert status.last_run.result == "skipped" and status.new_labels == 0
            assert "at least 2 classes" in status.detail
            assert "when labels change" in status.next_trigger
            code, message = failure(lambda: client.predict([solid_image("red")]))
            assert code == grpc.StatusCode.FAILED_PRECONDITION
            assert "no CURRENT version" in message and "at least 2 classes" in message
            code, message = failure(lambda: client.suggest_labels(5))
            assert code == grpc.StatusCode.FAILED_PRECONDITION
            assert "nothing to suggest yet" in message and "at least 2 classes" in message

            # The labels did not change: the loop does not run again, however long it polls.
            stop = threading.Event()
            thread = threading.Thread(target=loop.run_forever, args=(stop,))
            thread.start()
            time.sleep(1.5)
            assert len(list(runs.iterdir())) == 1
            assert loop.due() is None

            client.submit_feedback("blue", image=colour_png((30, 30, 220), 1))
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                status = client.training_status()
                if status.last_run is not None and status.last_run.result == "promoted":
                    break
                time.sleep(0.1)
            stop.set()
            thread.join(60)
            assert status.state == "idle" and status.last_run is not None
            assert status.last_run.labels == 5 and status.last_run.version
            assert status.detail.startswith(f"last run {status.last_run.run_id} promoted")
            server.wait_for_version(status.last_run.version)
            model = client.get_model()
            assert model.training is not None and model.training.state == "idle"
            assert model.training.last_run is not None
            assert model.training.last_run.version == model.version
            rest = http_call(f"{server.http_url}/v1/training").json()
            assert rest["state"] == "idle" and rest["last_run"]["version"] == model.version
            assert http_call(f"{server.http_url}/v1/model").json()["training"]["state"] == "idle"
            # Two runs in all: the skipped one and the promoting one.
            assert len(list(runs.iterdir())) == 2
            value = metrics.registry.get_sample_value
            default = {"model": "tlserve"}
            assert value("tlserve_trainer_state", {**default, "state": "idle"}) == 1
            assert value("tlserve_trainer_state", {**default, "state": "waiting"}) == 0
    finally:
        store.close()
        server.stop()
