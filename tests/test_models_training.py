"""The trainer trains a named model from its own labels and the server serves it, while
the default model is untouched: the real `tlserve-trainer` command with a models file,
on the MNIST ConvNet (TensorFlow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from examples.odd_even import Task, parity, png
from tests.support import ROOT, ServerThread
from tlserve.clients import TlserveClient, errors
from tlserve.trainer.pretrain import CUT_LAYER

pytestmark = pytest.mark.slow


def trainer(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """The real `tlserve-trainer` command."""
    return subprocess.run(
        [sys.executable, "-m", "tlserve.trainer.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(600)
def test_a_named_model_trains_from_its_own_labels(tmp_path: Path, pretrained: Path) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text("[models.odd-even]\nmin_new_labels = 5\nepochs = 60\n")
    server = ServerThread(tmp_path).start()
    task = Task.load()
    try:
        # What `tlserve-trainer run` does at start for every model of its models file.
        server.registry.add_model("odd-even")
        with TlserveClient(server.target, timeout=60) as client:
            deadline = time.monotonic() + 10
            while "odd-even" not in [m.name for m in client.served_models()]:
                assert time.monotonic() < deadline, "the server did not list odd-even"
                time.sleep(0.05)
            for index in task.pool[:40]:
                digit = int(task.digits[index])
                client.submit_feedback(
                    parity(digit), image=png(task.images[index]), model="odd-even"
                )
            env = {
                **os.environ,
                "TLSERVE_DATA_DIR": str(tmp_path),
                "TLSERVE_MODELS_FILE": str(models_file),
                "TLSERVE_BACKBONE": str(pretrained),
                "TLSERVE_BACKBONE_CUT_LAYER": CUT_LAYER,
                "TLSERVE_BACKBONE_WEIGHTS": "none",
                "TLSERVE_METRICS_PORT": "none",
            }
            once = trainer("once", "--model", "odd-even", env=env, timeout=500)
            assert once.returncode == 0, once.stderr
            assert json.loads(once.stdout.splitlines()[-1])["result"] == "promoted"
            deadline = time.monotonic() + 30
            while not [m for m in client.served_models() if m.name == "odd-even" and m.version]:
                assert time.monotonic() < deadline, "the server did not load odd-even"
                time.sleep(0.1)
            right = 0
            for index in task.evaluation[:50]:
                image = png(task.images[index])
                answer = client.predict_one(image, model="odd-even").top[0].label
                right += answer == parity(int(task.digits[index]))
            assert right >= 35, right  # far above chance from 40 labels
            assert client.training_status(model="odd-even").last_run is not None
            # The default model has neither labels nor a version nor a run.
            assert client.list_labels() == []
            with pytest.raises(errors.ApiError):
                client.predict_one(png(task.images[0]))
            assert client.training_status().last_run is None
            unknown = trainer("once", "--model", "nope", env=env, timeout=120)
            assert unknown.returncode == 1 and "odd-even" in unknown.stderr
    finally:
        server.stop()
