"""Trainer helpers for the tests that train (TensorFlow): settings on the pretrained ConvNet
or a small MobileNetV2, and the trainer loop in a thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from tlserve.server.registry import Registry
from tlserve.server.store.sqlite import SqliteFeedbackStore
from tlserve.trainer.loop import TrainerLoop
from tlserve.trainer.metrics import TrainerMetrics
from tlserve.trainer.pretrain import CUT_LAYER
from tlserve.trainer.settings import TrainerSettings


def on_pretrained(data_dir: Path, pretrained: Path, **settings: Any) -> TrainerSettings:
    """Trainer settings on the `pretrained` fixture's MNIST ConvNet (no weights to download),
    the server's data dir, no metrics endpoint; `settings` adds the test's own."""
    return TrainerSettings(
        data_dir=data_dir,
        backbone=str(pretrained),
        backbone_cut_layer=CUT_LAYER,
        backbone_weights="none",
        metrics_port=None,
        **settings,
    )


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


def small_trainer(
    data_dir: Path, **overrides: object
) -> tuple[SqliteFeedbackStore, Registry, TrainerSettings]:
    """A store, a registry and settings for a small untrained MobileNetV2 at 32x32."""
    settings = TrainerSettings(
        data_dir=data_dir,
        backbone="MobileNetV2",
        backbone_weights="none",
        input_size=32,
        metrics_port=None,
        **overrides,  # type: ignore[arg-type]
    )
    return (
        SqliteFeedbackStore(data_dir / "feedback.sqlite3"),
        Registry.local(data_dir / "registry"),
        settings,
    )
