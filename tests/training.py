"""The trainer loop in a thread, for tests that run the whole learning loop (TensorFlow)."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from tlserve.server.registry import Registry
from tlserve.server.store.sqlite import SqliteFeedbackStore
from tlserve.trainer.loop import TrainerLoop
from tlserve.trainer.metrics import TrainerMetrics
from tlserve.trainer.settings import TrainerSettings


class Loop:
    """The trainer loop in a thread, on the server's data dir (its own store connection)."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.store = SqliteFeedbackStore(settings.data_dir / "feedback.sqlite3")
        self.metrics = TrainerMetrics(CollectorRegistry())
        registry = Registry.local(settings.registry_path)
        self.loop = TrainerLoop(settings, self.store, registry, self.metrics)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, args=(self.stop,))

    def __enter__(self) -> Loop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(300)
        self.store.close()
