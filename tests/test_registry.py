"""The registry format over its storage seam: content-addressed backbones, immutable
versions, CURRENT by compare-and-set, verification on the bytes read, retention."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from examples.colour_model import (
    colour_backbone,
    linear_head,
    publish_backbone,
    publish_colour_version,
)
from tlserve.server.errors import Conflict, ModelRejected, NotFound
from tlserve.server.registry import LocalFolderStorage, Registry
from tlserve.server.registry.format import MODEL_FORMAT
from tlserve.server.registry.storage import MissingObject, PointerChanged


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def registry(root: Path) -> Registry:
    return Registry.local(root)


# ---- the storage contract -------------------------------------------------------------


def test_groups_appear_whole_and_are_immutable(root: Path) -> None:
    storage = LocalFolderStorage(root)
    assert storage.publish("versions/v1", {"a.bin": b"a", "card/b.png": b"b"})
    assert storage.read("versions/v1/card/b.png") == b"b"
    assert not storage.publish("versions/v1", {"a.bin": b"other"})
    assert storage.read("versions/v1/a.bin") == b"a"
    assert storage.list("versions") == ["v1"]
    storage.delete("versions/v1")
    assert storage.list("versions") == [] and not storage.exists("versions/v1/a.bin")


def test_pointer_compare_and_set(root: Path) -> None:
    storage = LocalFolderStorage(root)
    assert storage.read_pointer("CURRENT") is None
    storage.compare_and_set_pointer("CURRENT", None, b"one")
    with pytest.raises(PointerChanged):
        storage.compare_and_set_pointer("CURRENT", None, b"two")
    storage.compare_and_set_pointer("CURRENT", b"one", b"two")
    assert storage.read_pointer("CURRENT") == b"two"


def test_concurrent_compare_and_set_loses_no_update(root: Path) -> None:
    """16 writers each add one to a counter with read + compare-and-set: all 16 land."""
    storage = LocalFolderStorage(root)
    storage.compare_and_set_pointer("COUNTER", None, b"0")

    def increment() -> None:
        while True:
            seen = storage.read_pointer("COUNTER")
            assert seen is not None
            try:
                storage.compare_and_set_pointer("COUNTER", seen, str(int(seen) + 1).encode())
                return
            except PointerChanged:
                continue

    threads = [threading.Thread(target=increment) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storage.read_pointer("COUNTER") == b"16"


@pytest.mark.parametrize("key", ["", "../x", "versions/../CURRENT", "/etc/passwd", ".tmp-x/a"])
def test_keys_cannot_leave_the_registry(root: Path, key: str) -> None:
    storage = LocalFolderStorage(root)
    with pytest.raises(MissingObject):
        storage.read(key)


def test_symlinks_out_of_the_registry_read_as_missing(tmp_path: Path, root: Path) -> None:
    storage = LocalFolderStorage(root)
    storage.publish("versions/v1", {"a.bin": b"a"})
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"secret")
    (root / "versions" / "v1" / "leak.bin").symlink_to(secret)
    (root / "versions" / "v2").symlink_to(tmp_path)
    with pytest.raises(MissingObject):
        storage.read("versions/v1/leak.bin")
    with pytest.raises(MissingObject):
        storage.read("versions/v2/secret.txt")


def test_everything_written_is_readable_by_other_users(registry: Registry, root: Path) -> None:
    publish_colour_version(registry)
    for path in [root, *root.rglob("*")]:
        if path.name.startswith(".") and path.name.endswith(".lock"):
            continue
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o044 == 0o044, f"{path.relative_to(root)} is {oct(mode)}"


# ---- the format -------------------------------------------------------------------------


def test_backbones_are_content_addressed_and_shared(registry: Registry, root: Path) -> None:
    first = publish_backbone(registry, 32)
    again = publish_backbone(registry, 32)
    other = publish_backbone(registry, 48)
    assert first.id == again.id != other.id
    assert sorted(p.name for p in (root / "backbones").iterdir()) == sorted([first.id, other.id])
    assert registry.read_backbone_onnx(first.id) == colour_backbone(32)


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
    registry.verify_version(manifest)
    assert registry.current() == version
    assert registry.versions() == [version]


def test_versions_list_newest_first(registry: Registry) -> None:
    versions = [publish_colour_version(registry, make_current=False) for _ in range(3)]
    assert registry.versions() == sorted(versions, reverse=True)
    assert registry.current() is None


def test_tampered_head_is_detected_on_the_bytes_read(registry: Registry, root: Path) -> None:
    version = publish_colour_version(registry)
    manifest = registry.model_manifest(version)
    good = registry.read_version_file(manifest, "head.onnx")
    head = root / "versions" / version / "head.onnx"
    head.write_bytes(good + b"\0")
    with pytest.raises(ModelRejected, match="sha256") as refused:
        registry.read_version_file(manifest, "head.onnx")
    assert str(root) not in str(refused.value)


def test_unknown_and_malformed_versions(registry: Registry) -> None:
    with pytest.raises(NotFound, match="not in the registry"):
        registry.model_manifest("20990101-000000-abcdef")
    with pytest.raises(NotFound, match="not a valid version id"):
        registry.model_manifest("../escape")
    with pytest.raises(NotFound):
        registry.set_current("missing")


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"labels": ["only-one"]}, "at least 2 distinct"),
        ([1, 2, 3], "model.json is invalid"),
    ],
)
def test_invalid_model_json_is_rejected(
    registry: Registry, root: Path, document: object, reason: str
) -> None:
    version = publish_colour_version(registry)
    path = root / "versions" / version / "model.json"
    if isinstance(document, dict):
        document = {**json.loads(path.read_text()), **document}
    path.write_text(json.dumps(document))
    with pytest.raises(ModelRejected, match=reason):
        registry.model_manifest(version)


@pytest.mark.parametrize(("content", "reason"), [(b"\xff\xfe", "UTF-8"), (b"../..\n", "not a")])
def test_bad_current_is_rejected_not_crashed_on(
    registry: Registry, root: Path, content: bytes, reason: str
) -> None:
    publish_colour_version(registry)
    (root / "CURRENT").write_bytes(content)
    with pytest.raises(ModelRejected, match=reason):
        registry.current()


def test_version_requires_its_backbone(registry: Registry, tmp_path: Path) -> None:
    backbone = publish_backbone(Registry.local(tmp_path / "other"))
    with pytest.raises(NotFound, match="must be published before"):
        registry.publish_version(
            head_onnx=linear_head(np.eye(3, dtype=np.float32)),
            labels=["a", "b", "c"],
            backbone=backbone,
            head_input="features",
            head_output="probabilities",
        )


def test_partial_publications_are_invisible_and_removable(registry: Registry, root: Path) -> None:
    version = publish_colour_version(registry)
    litter = root / "versions" / ".tmp-crashed"
    litter.mkdir()
    (litter / "head.onnx").write_bytes(colour_backbone())
    assert registry.versions() == [version]
    assert registry.remove_partials() == ["versions/.tmp-crashed"]
    assert not litter.exists()


def test_current_is_replaced_atomically(registry: Registry, root: Path) -> None:
    first = publish_colour_version(registry)
    second = publish_colour_version(registry)
    assert registry.current() == second
    registry.set_current(first)
    assert registry.current() == first
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []


def test_set_current_with_expected_refuses_a_moved_current(registry: Registry) -> None:
    first = publish_colour_version(registry)
    second = publish_colour_version(registry, make_current=False)
    registry.set_current(second, expected=first)
    with pytest.raises(Conflict, match=f"moved from {first} to {second}"):
        registry.set_current(first, expected=first)
    assert registry.current() == second
