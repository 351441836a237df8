"""The trainer's side of rollouts: with `rollout = shadow` a version that passed the gate
is published as the challenger of an experiment against the served version, which the
server then scores with; it does not become CURRENT."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from examples.odd_even import Task, png
from tests.support import ServerThread
from tests.training import on_pretrained
from tlserve.clients import FeedbackItem, TlserveClient
from tlserve.server.registry import Registry
from tlserve.server.store.sqlite import SqliteFeedbackStore
from tlserve.trainer.pipeline import RunResult, Trainer

pytestmark = pytest.mark.slow  # TensorFlow: two real training runs


@pytest.mark.timeout(600)
def test_a_shadow_rollout_publishes_a_challenger(tmp_path: Path, pretrained: Path) -> None:
    task = Task.load()
    server = ServerThread(tmp_path).start()
    registry = Registry.local(tmp_path / "registry")
    store = SqliteFeedbackStore(tmp_path / "feedback.sqlite3")
    try:
        with TlserveClient(server.target, timeout=60) as client:

            def label(indices: np.ndarray) -> None:
                items = [FeedbackItem(task.truth(i), image=png(task.images[i])) for i in indices]
                assert client.stream_feedback(items).accepted == len(items)

            label(task.pool[:200])
            first = Trainer(on_pretrained(tmp_path, pretrained, rollout="shadow"), store, registry)
            # Nothing is served yet: the first version is served directly.
            record = first.run_once()
            assert record.result == RunResult.PROMOTED and registry.current() == record.version
            champion = record.version

            label(task.pool[200:300])
            second = Trainer(
                on_pretrained(tmp_path, pretrained, rollout="shadow", rollout_share=0.5),
                store,
                registry,
            ).run_once()
            assert second.result == RunResult.CHALLENGER, second.reasons
            assert any("published as challenger" in r for r in second.reasons)
            assert registry.current() == champion
            experiment, _ = registry.experiment()
            assert experiment is not None and experiment.running
            assert (experiment.champion, experiment.challenger) == (champion, second.version)
            assert experiment.share == 0.5 and experiment.started_by.startswith("trainer run")

            deadline = time.monotonic() + 30
            while server.server.models.default.challenger is None:  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the server never loaded the challenger"
                time.sleep(0.05)
            served = client.get_model()
            assert served.version == champion
            assert served.experiment is not None
            assert served.experiment.challenger_version == second.version
    finally:
        store.close()
        server.stop()
