"""While a served version's drift alarm is on, SuggestLabels offers the images from the
drifted region first: the ones the model was not trained on the like of."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from examples.colour_model import COLOURS, linear_head, publish_backbone
from tests.support import ServerThread, colour_png
from tlserve.clients import TlserveClient
from tlserve.server.monitoring.drift import REFERENCE_FILE, DriftReference
from tlserve.server.registry import Registry

LABELS = ["red", "green", "blue"]


def features_of(colour: str, jitter: int) -> np.ndarray:
    """What the colour backbone computes for colour_png(colour, jitter): its mean / 255."""
    offset = np.random.default_rng(jitter).integers(-20, 20, 3)
    return np.clip(np.array(COLOURS[colour]) + offset, 0, 255) / 255.0


def publish_trained_on_red_and_green(data_dir: Path) -> str:
    registry = Registry.local(data_dir / "registry")
    backbone = publish_backbone(registry)
    seen = [features_of(c, j) for c in ("red", "green") for j in range(100)]
    reference = DriftReference.build(np.stack(seen))
    assert reference is not None
    weights = np.eye(3, dtype=np.float32) * 20.0
    version = registry.publish_version(
        head_onnx=linear_head(weights),
        labels=LABELS,
        backbone=backbone,
        head_input="features",
        head_output="probabilities",
        card={"drift_reference": {"file": REFERENCE_FILE}},
        extra_files={REFERENCE_FILE: reference.to_bytes()},
    )
    registry.set_current(version)
    return version


def test_suggestions_favour_drifted_images_while_the_alarm_is_on(tmp_path: Path) -> None:
    publish_trained_on_red_and_green(tmp_path)
    server = ServerThread(
        tmp_path, drift_window=20, drift_test_every=5, keep_max_per_second=0.0
    ).start()
    try:
        with TlserveClient(server.target) as client:
            # As mixed as the training images: a window of green alone would be drift too.
            known = [colour_png(COLOURS[c], 500 + j) for j in range(20) for c in ("red", "green")]
            client.predict(known)
            assert client.get_model().monitoring.drift_state == "ok"  # type: ignore[union-attr]
            before = client.suggest_labels(6, images=False)
            blue_images = [colour_png(COLOURS["blue"], 900 + j) for j in range(15)]
            blue = {p.prediction_id for p in client.predict(blue_images).predictions}
            monitoring = client.get_model().monitoring
            assert monitoring is not None and monitoring.drift_state == "drift"
            after = client.suggest_labels(6, images=False)
    finally:
        server.stop()
    assert not {s.prediction_id for s in before} & blue
    assert len(after) == 6 and {s.prediction_id for s in after} <= blue
