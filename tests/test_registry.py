"""The registry format: content-addressed backbones, immutable versions, atomic CURRENT."""

from __future__ import annotations

import json

import numpy as np
import pytest

from examples.colour_model import (
    colour_backbone,
    linear_head,
    publish_backbone,
    publish_colour_version,
)
from server.errors import ModelRejected, NotFound
from server.registry import MODEL_FORMAT, Registry


def test_backbones_are_content_addressed_and_shared(registry: Registry) -> None:
    first = publish_backbone(registry, 32)
    again = publish_backbone(registry, 32)
    other = publish_backbone(registry, 48)
    assert first.id == again.id != other.id
    assert sorted(p.name for p in registry.backbones_dir.iterdir()) == sorted([first.id, other.id])
    registry.verify_backbone_file(first.id)


def test_published_version_is_self_describing(registry: Registry) -> None:
    version = publish_colour_version(registry)
    manifest = registry.model_manifest(version)
    assert manifest.raw["format"] == MODEL_FORMAT
    assert manifest.labels == ("red", "green", "blue")
    assert manifest.raw["input"] == {
        "height": 32,
        "width": 32,
        "dtype": "uint8",
        "layout": "NHWC",
        "resize": "stretch",
    }
    assert set(manifest.files) == {"head.onnx"}
    registry.verify_version_files(manifest)
    assert registry.current() == version
    assert registry.versions() == [version]


def test_versions_list_newest_first(registry: Registry) -> None:
    versions = [publish_colour_version(registry, make_current=False) for _ in range(3)]
    assert registry.versions() == sorted(versions, reverse=True)
    assert registry.current() is None


def test_tampered_head_is_detected(registry: Registry) -> None:
    version = publish_colour_version(registry)
    head = registry.version_dir(version) / "head.onnx"
    head.write_bytes(head.read_bytes() + b"\0")
    with pytest.raises(ModelRejected, match="sha256"):
        registry.verify_version_files(registry.model_manifest(version))


def test_unknown_and_malformed_versions(registry: Registry) -> None:
    with pytest.raises(NotFound, match="not in the registry"):
        registry.model_manifest("20990101-000000-abcdef")
    with pytest.raises(NotFound, match="not a valid version id"):
        registry.model_manifest("../escape")
    with pytest.raises(NotFound):
        registry.set_current("missing")


def test_invalid_model_json_is_rejected(registry: Registry) -> None:
    version = publish_colour_version(registry)
    path = registry.version_dir(version) / "model.json"
    document = json.loads(path.read_text())
    document["labels"] = ["only-one"]
    path.write_text(json.dumps(document))
    with pytest.raises(ModelRejected, match="at least 2 distinct"):
        registry.model_manifest(version)


def test_version_requires_its_backbone(registry: Registry) -> None:
    other = Registry(registry.root.parent / "other")
    backbone = publish_backbone(other)
    with pytest.raises(NotFound, match="must be published before"):
        registry.publish_version(
            head_onnx=linear_head(np.eye(3, dtype=np.float32)),
            labels=["a", "b", "c"],
            backbone=backbone,
            head_input="features",
            head_output="probabilities",
        )


def test_partial_publications_are_invisible_and_removable(registry: Registry) -> None:
    version = publish_colour_version(registry)
    litter = registry.versions_dir / ".tmp-crashed"
    litter.mkdir()
    (litter / "head.onnx").write_bytes(colour_backbone())
    assert registry.versions() == [version]
    assert registry.remove_partials() == [litter]
    assert not litter.exists()


def test_current_is_replaced_atomically(registry: Registry) -> None:
    first = publish_colour_version(registry)
    second = publish_colour_version(registry)
    assert registry.current() == second
    registry.set_current(first)
    assert registry.current() == first
    assert [p.name for p in registry.root.iterdir() if p.name.startswith(".CURRENT")] == []
