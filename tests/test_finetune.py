"""Fine-tuning: top backbone layers trained end to end; the result is a new, exported,
parity-checked backbone that the server loads like any other."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import colour_png
from tests.training import small_trainer
from tlserve.server.model_slot import ModelLoader
from tlserve.server.runtime import SessionFactory
from tlserve.trainer.pipeline import Trainer

pytestmark = pytest.mark.slow  # TensorFlow: fine-tunes a backbone


@pytest.mark.timeout(600)
def test_fine_tuned_run_brings_a_new_backbone(tmp_path: Path) -> None:
    store, registry, settings = small_trainer(
        tmp_path,
        epochs=20,
        fine_tune_layers=4,
        fine_tune_epochs=1,
        fine_tune_augment=["rotation", "zoom"],
    )
    for name, rgb in {"red": (220, 30, 30), "blue": (30, 30, 220)}.items():
        for i in range(12):
            store.add_label(principal="test", image=colour_png(rgb, i), label=name, source="test")
    store.approve_labels(["red", "blue"], "token:admin")  # one labeler: an admin lets them in
    trainer = Trainer(settings, store, registry)
    frozen = trainer.ensure_backbone()
    record = trainer.run_once("fine-tune")
    assert record.result == "promoted", record.reasons
    assert record.version is not None and "fine_tune" in record.timings
    manifest = registry.model_manifest(record.version)
    assert manifest.backbone_id != frozen.id
    source = registry.backbone_manifest(manifest.backbone_id).source
    assert source["fine_tuned_from"] == frozen.id and len(source["unfrozen_layers"]) == 4
    assert "fine_tune_loss" in manifest.raw["training"]["history"]
    cached = store.features(manifest.backbone_id, [r.sample_id for r in store.current_labels()])
    assert len(cached) == 24  # features recomputed and cached for the new backbone
    loader = ModelLoader(registry, SessionFactory("cpu", 1), warmup_batch=4)
    loaded = loader.load(record.version)
    assert loaded.backbone.id == manifest.backbone_id
    store.close()
