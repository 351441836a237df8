"""The registry format over its storage seam: content-addressed backbones, immutable
versions, CURRENT by compare-and-set, verification on the bytes read, retention.

The contract and the format run against both storages: the local folder and S3 (a real
S3 protocol server, moto's, in its own process); then what is particular to each."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from examples.colour_model import (
    colour_backbone,
    linear_head,
    publish_backbone,
    publish_colour_version,
)
from tests.s3 import MotoServer
from tlserve.server.errors import Conflict, ModelRejected, NotFound
from tlserve.server.registry import LocalFolderStorage, Registry
from tlserve.server.registry.format import MODEL_FORMAT
from tlserve.server.registry.s3 import S3Storage
from tlserve.server.registry.storage import MissingObject, PointerChanged, RegistryStorage

StorageFactory = Callable[[], RegistryStorage]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture(params=["folder", "s3"])
def make_storage(request: pytest.FixtureRequest, root: Path, tmp_path: Path) -> StorageFactory:
    """Opens the registry's storage as another process would (each call its own client)."""
    if request.param == "folder":
        return lambda: LocalFolderStorage(root)
    moto: MotoServer = request.getfixturevalue("moto")
    bucket = moto.new_bucket()
    return lambda: S3Storage(
        f"s3://{bucket}/registry",
        client=moto.client(),
        cache_dir=tmp_path / "cache",
        partial_age_seconds=0.0,
    )


@pytest.fixture
def storage(make_storage: StorageFactory) -> RegistryStorage:
    return make_storage()


@pytest.fixture
def any_registry(storage: RegistryStorage) -> Registry:
    """The registry on either storage."""
    return Registry(storage)


@pytest.fixture
def registry(root: Path) -> Registry:
    """The registry on a folder, for what is particular to folders."""
    return Registry.local(root)


# ---- the storage contract -------------------------------------------------------------


def test_groups_appear_whole_and_are_immutable(storage: RegistryStorage) -> None:
    assert storage.publish("versions/v1", {"a.bin": b"a", "card/b.png": b"b"})
    assert storage.read("versions/v1/card/b.png") == b"b"
    assert not storage.publish("versions/v1", {"a.bin": b"other"})
    assert storage.read("versions/v1/a.bin") == b"a"
    assert storage.list("versions") == ["v1"]
    storage.delete("versions/v1")
    assert storage.list("versions") == [] and not storage.exists("versions/v1/a.bin")


def test_pointer_compare_and_set(storage: RegistryStorage) -> None:
    assert storage.read_pointer("CURRENT") is None
    storage.compare_and_set_pointer("CURRENT", None, b"one")
    with pytest.raises(PointerChanged):
        storage.compare_and_set_pointer("CURRENT", None, b"two")
    storage.compare_and_set_pointer("CURRENT", b"one", b"two")
    assert storage.read_pointer("CURRENT") == b"two"


def test_concurrent_compare_and_set_loses_no_update(make_storage: StorageFactory) -> None:
    """16 writers, each with its own storage client, add one to a counter with read +
    compare-and-set: all 16 land."""
    storage = make_storage()
    storage.compare_and_set_pointer("COUNTER", None, b"0")

    def increment() -> None:
        storage = make_storage()
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
def test_keys_cannot_leave_the_registry(storage: RegistryStorage, key: str) -> None:
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


def test_backbones_are_content_addressed_and_shared(any_registry: Registry) -> None:
    registry = any_registry
    first = publish_backbone(registry, 32)
    again = publish_backbone(registry, 32)
    other = publish_backbone(registry, 48)
    assert first.id == again.id != other.id
    assert sorted(registry.storage.list("backbones")) == sorted([first.id, other.id])
    assert registry.read_backbone_onnx(first.id) == colour_backbone(32)


def test_published_version_is_self_describing(any_registry: Registry) -> None:
    registry = any_registry
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


def test_versions_list_newest_first(any_registry: Registry) -> None:
    registry = any_registry
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


def test_unknown_and_malformed_versions(any_registry: Registry) -> None:
    registry = any_registry
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


def test_version_requires_its_backbone(any_registry: Registry, tmp_path: Path) -> None:
    registry = any_registry
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


def test_set_current_with_expected_refuses_a_moved_current(any_registry: Registry) -> None:
    registry = any_registry
    first = publish_colour_version(registry)
    second = publish_colour_version(registry, make_current=False)
    registry.set_current(second, expected=first)
    with pytest.raises(Conflict, match=f"moved from {first} to {second}"):
        registry.set_current(first, expected=first)
    assert registry.current() == second


def test_retention_on_either_storage(any_registry: Registry) -> None:
    registry = any_registry
    versions = [publish_colour_version(registry) for _ in range(4)]
    removed = registry.retain(keep_versions=1)
    assert sorted(removed) == sorted(versions[:3])
    assert registry.versions() == [versions[3]]
    registry.verify_version(registry.model_manifest(versions[-1]))


# ---- object storage ---------------------------------------------------------------------


def _s3(moto: MotoServer, tmp_path: Path, bucket: str = "") -> tuple[S3Storage, list[Any]]:
    """A storage on a fresh bucket, and the (operation, HTTP status) of every S3 call it makes."""
    bucket = bucket or moto.new_bucket()
    calls: list[Any] = []
    client = moto.client()

    def record(http_response: Any, parsed: Any, model: Any, **_: Any) -> None:
        calls.append((model.name, http_response.status_code))

    client.meta.events.register("after-call.s3", record)
    storage = S3Storage(f"s3://{bucket}", client=client, cache_dir=tmp_path / "cache")
    return storage, calls


def test_unmarked_groups_on_s3_are_invisible_until_published(
    moto: MotoServer, tmp_path: Path
) -> None:
    storage, _ = _s3(moto, tmp_path)
    # What a publisher that died after its objects and before its marker leaves behind:
    storage.client.put_object(Bucket=storage.bucket, Key="versions/v9/head.onnx", Body=b"h")
    assert storage.list("versions") == []
    assert not storage.exists("versions/v9/head.onnx")
    with pytest.raises(MissingObject):
        storage.read("versions/v9/head.onnx")
    assert storage.publish("versions/v1", {"a.bin": b"a"})
    fresh = S3Storage(f"s3://{storage.bucket}", client=moto.client(), partial_age_seconds=3600)
    assert fresh.remove_partials() == []  # could be a publication still in progress
    old = S3Storage(f"s3://{storage.bucket}", client=moto.client(), partial_age_seconds=0)
    assert old.remove_partials() == ["versions/v9"]
    assert storage.list("versions") == ["v1"] and storage.read("versions/v1/a.bin") == b"a"


def test_two_publishers_of_one_group_on_s3_one_wins(moto: MotoServer, tmp_path: Path) -> None:
    first, _ = _s3(moto, tmp_path)
    second = S3Storage(f"s3://{first.bucket}", client=moto.client())
    assert first.publish("backbones/b1", {"backbone.onnx": b"x"})
    assert not second.publish("backbones/b1", {"backbone.onnx": b"x"})


def test_polling_current_on_s3_costs_a_304_while_unchanged(
    moto: MotoServer, tmp_path: Path
) -> None:
    writer = Registry(_s3(moto, tmp_path)[0])
    version = publish_colour_version(writer)
    reader_storage, calls = _s3(moto, tmp_path, writer.storage.bucket)  # type: ignore[attr-defined]
    reader = Registry(reader_storage)
    assert reader.current() == version
    calls.clear()
    for _ in range(3):
        assert reader.current() == version
    assert calls == [("GetObject", 304)] * 3
    second = publish_colour_version(writer)
    calls.clear()
    assert reader.current() == second
    assert calls == [("GetObject", 200)]


def test_model_files_from_s3_are_cached_by_content_hash(moto: MotoServer, tmp_path: Path) -> None:
    storage, _ = _s3(moto, tmp_path)
    registry = Registry(storage)
    version = publish_colour_version(registry)
    manifest = registry.model_manifest(version)
    head = registry.read_version_file(manifest, "head.onnx")
    cached = tmp_path / "cache" / manifest.files["head.onnx"]
    assert cached.read_bytes() == head
    # A second replica on the same disk (or this one after a restart) reads no bytes.
    other, other_calls = _s3(moto, tmp_path, storage.bucket)
    assert Registry(other).read_version_file(manifest, "head.onnx") == head
    assert other_calls == []  # not one request: the manifest's sha256 vouches for the copy
    # A damaged cache entry is noticed and fetched again.
    cached.write_bytes(b"rot")
    assert Registry(other).read_version_file(manifest, "head.onnx") == head
    assert cached.read_bytes() == head


def test_compare_and_set_on_s3_is_a_conditional_write(moto: MotoServer, tmp_path: Path) -> None:
    """Two servers' views of CURRENT: the one that read it last cannot overwrite a change
    it has not seen, even though its own cached ETag says nothing moved."""
    first, _ = _s3(moto, tmp_path)
    second = S3Storage(f"s3://{first.bucket}", client=moto.client())
    first.compare_and_set_pointer("CURRENT", None, b"v1\n")
    assert second.read_pointer("CURRENT") == b"v1\n"
    first.compare_and_set_pointer("CURRENT", b"v1\n", b"v2\n")
    with pytest.raises(PointerChanged):
        second.compare_and_set_pointer("CURRENT", b"v1\n", b"v3\n")
    assert second.read_pointer("CURRENT") == b"v2\n"
    with pytest.raises(PointerChanged):
        second.compare_and_set_pointer("CURRENT", None, b"v3\n")


class _NoServer:
    """Enough of a boto3 client for parsing URLs; any request would fail."""

    class meta:  # noqa: N801 (boto3's attribute name)
        endpoint_url = "http://nowhere"


MOTO_LESS = _NoServer()


def test_s3_urls() -> None:
    with pytest.raises(ValueError, match="s3://bucket"):
        S3Storage("https://example.com/models", client=MOTO_LESS)
    with pytest.raises(MissingObject):
        S3Storage("s3://models/../etc", client=MOTO_LESS)
    storage = S3Storage("s3://models/prod/registry", client=MOTO_LESS)
    assert (storage.bucket, storage.prefix) == ("models", "prod/registry")
