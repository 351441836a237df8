"""A publisher killed with SIGKILL at any point of a publication leaves CURRENT pointing at
a complete, verifiable version (the registry code the trainer publishes with)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tlserve.server.registry import Registry

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # SIGKILLs publishing processes

PUBLISHER = """
import sys, numpy as np
from pathlib import Path
from examples.colour_model import colour_backbone, linear_head
from tlserve.server.registry import Registry
registry = Registry.local(Path(sys.argv[1]))
big = np.random.default_rng(0).bytes(8 << 20)  # a heavy card widens the window for the kill
n = 0
while True:
    n += 1
    backbone = registry.publish_backbone(
        colour_backbone(16 + n % 7, 16 + n % 7), input_name="images", output_name="features",
        height=16 + n % 7, width=16 + n % 7, feature_dim=3)
    version = registry.publish_version(
        head_onnx=linear_head(np.eye(3, dtype=np.float32) * n), labels=["r", "g", "b"],
        backbone=backbone, head_input="features", head_output="probabilities",
        card_files={"blob.bin": big})
    registry.set_current(version)
    print(version, flush=True)
"""


def verify_current(registry: Registry) -> str:
    version = registry.current()
    assert version is not None
    manifest = registry.model_manifest(version)
    registry.verify_version(manifest)
    registry.backbone_manifest(manifest.backbone_id)
    registry.read_backbone_onnx(manifest.backbone_id)
    return version


def test_sigkill_during_publication_leaves_a_valid_current(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    registry = Registry.local(root)
    seen: set[str] = set()
    for attempt in range(8):
        process = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(root)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        first = process.stdout.readline().strip()  # at least one publication completed
        assert first, "the publisher did not publish"
        time.sleep(0.03 * (attempt + 1))  # kill at a different point each time
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        seen.add(verify_current(registry))
        registry.remove_partials()
        leftovers = [p for p in (root / "versions").iterdir() if p.name.startswith(".")]
        assert leftovers == []
        for version in registry.versions():
            registry.verify_version(registry.model_manifest(version))
    assert len(seen) >= 4
