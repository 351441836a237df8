"""Registry retention: newest N versions, CURRENT and the version it replaced, and the
backbones they use survive; everything else goes."""

from __future__ import annotations

from examples.colour_model import publish_backbone, publish_colour_version
from tlserve.server.registry import Registry


def test_retention_keeps_current_its_parent_and_their_backbones(registry: Registry) -> None:
    replaced = publish_colour_version(registry, size=20, make_current=False)
    middle = [publish_colour_version(registry, size=24, make_current=False) for _ in range(3)]
    current = publish_colour_version(registry, size=28, parent=replaced)
    newer = [publish_colour_version(registry, size=24, make_current=False) for _ in range(2)]
    unused = publish_backbone(registry, size=40)
    removed = registry.retain(keep_versions=2)
    assert set(removed) == set(middle)
    assert set(registry.versions()) == {replaced, current, *newer}
    assert registry.current() == current
    assert not registry.has_backbone(unused.id)
    for version in registry.versions():
        manifest = registry.model_manifest(version)
        registry.verify_version(manifest)
        registry.read_backbone_onnx(manifest.backbone_id)
