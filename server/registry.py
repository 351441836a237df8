"""The model registry: a directory both the trainer (writer) and servers (readers) share.

    registry/
      backbones/<sha256>/backbone.onnx, backbone.json   content-addressed, shared
      versions/<id>/head.onnx, model.json, card/         immutable once published
      CURRENT                                            the served version id

Publication is atomic: files go into a hidden temp directory, are fsynced, the
directory is renamed into place and its parent fsynced; CURRENT is replaced the same
way. Readers ignore hidden entries, so a crash mid-publication leaves only litter that
`remove_partials` clears. Every manifest names the sha256 of each file it covers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.errors import ModelRejected, NotFound
from server.fsutil import atomic_write_bytes, fsync_dir, sha256_file, write_and_sync
from server.imaging import RESIZE_POLICIES, InputSpec

MODEL_FORMAT = "tlserve.model/v1"
BACKBONE_FORMAT = "tlserve.backbone/v1"
_VERSION_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def new_version_id(now: datetime | None = None) -> str:
    """Sortable by creation time (to the microsecond), unique across concurrent writers."""
    moment = now or datetime.now(UTC)
    return f"{moment:%Y%m%d-%H%M%S-%f}-{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class BackboneManifest:
    id: str
    input_name: str
    output_name: str
    height: int
    width: int
    feature_dim: int
    resize: str
    source: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.height, self.width, self.resize)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BACKBONE_FORMAT,
            "id": self.id,
            "input": {
                "name": self.input_name,
                "dtype": "uint8",
                "layout": "NHWC",
                "height": self.height,
                "width": self.width,
                "channels": 3,
                "resize": self.resize,
            },
            "output": {"name": self.output_name, "dtype": "float32", "dim": self.feature_dim},
            "source": dict(self.source),
            "files": {"backbone.onnx": self.id},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BackboneManifest:
        if data.get("format") != BACKBONE_FORMAT:
            raise ValueError(
                f"backbone.json format is {data.get('format')!r}, expected {BACKBONE_FORMAT!r}"
            )
        inp, out = data["input"], data["output"]
        resize = inp.get("resize", "stretch")
        if resize not in RESIZE_POLICIES:
            raise ValueError(f"unknown resize policy {resize!r}")
        return cls(
            id=str(data["id"]),
            input_name=str(inp["name"]),
            output_name=str(out["name"]),
            height=int(inp["height"]),
            width=int(inp["width"]),
            feature_dim=int(out["dim"]),
            resize=resize,
            source=dict(data.get("source", {})),
        )


@dataclass(frozen=True, slots=True)
class ModelManifest:
    """A version's model.json: the head, its labels, its backbone and its card."""

    version: str
    labels: tuple[str, ...]
    backbone_id: str
    head_input: str
    head_output: str
    files: Mapping[str, str]
    created_at: str
    parent: str | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelManifest:
        if data.get("format") != MODEL_FORMAT:
            raise ValueError(
                f"model.json format is {data.get('format')!r}, expected {MODEL_FORMAT!r}"
            )
        labels = tuple(str(label) for label in data["labels"])
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be at least 2 distinct names, got {list(labels)}")
        head = data["head"]
        return cls(
            version=str(data["version"]),
            labels=labels,
            backbone_id=str(data["backbone_id"]),
            head_input=str(head["input"]),
            head_output=str(head["output"]),
            files={str(k): str(v) for k, v in data["files"].items()},
            created_at=str(data.get("created_at", "")),
            parent=data.get("parent"),
            raw=data,
        )


class Registry:
    """Reads and (for the trainer and tests) writes a registry directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def backbones_dir(self) -> Path:
        return self.root / "backbones"

    def version_dir(self, version: str) -> Path:
        _check_version_id(version)
        return self.versions_dir / version

    def backbone_dir(self, backbone_id: str) -> Path:
        if not _SHA256.match(backbone_id):
            raise NotFound(f"backbone id {backbone_id!r} is not a sha256 hex digest")
        return self.backbones_dir / backbone_id

    # ---- reading -------------------------------------------------------------

    def current(self) -> str | None:
        """The version CURRENT points at, or None before the first publication."""
        try:
            text = (self.root / "CURRENT").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def versions(self) -> list[str]:
        """Published versions, newest first."""
        if not self.versions_dir.is_dir():
            return []
        names = [
            p.name
            for p in self.versions_dir.iterdir()
            if not p.name.startswith(".") and (p / "model.json").is_file()
        ]
        return sorted(names, reverse=True)

    def model_manifest(self, version: str) -> ModelManifest:
        path = self.version_dir(version) / "model.json"
        if not path.is_file():
            raise NotFound(f"model version {version!r} is not in the registry at {self.root}")
        try:
            manifest = ModelManifest.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelRejected(f"version {version}: model.json is invalid: {exc}") from None
        if manifest.version != version:
            raise ModelRejected(f"version {version}: model.json names version {manifest.version!r}")
        return manifest

    def backbone_manifest(self, backbone_id: str) -> BackboneManifest:
        path = self.backbone_dir(backbone_id) / "backbone.json"
        if not path.is_file():
            raise ModelRejected(
                f"backbone {backbone_id} is missing from the registry at {self.root}"
            )
        try:
            manifest = BackboneManifest.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelRejected(
                f"backbone {backbone_id}: backbone.json is invalid: {exc}"
            ) from None
        if manifest.id != backbone_id:
            raise ModelRejected(f"backbone {backbone_id}: backbone.json names id {manifest.id!r}")
        return manifest

    def verify_version_files(self, manifest: ModelManifest) -> None:
        """Every file model.json lists exists and has the recorded sha256."""
        if "head.onnx" not in manifest.files:
            raise ModelRejected(f"version {manifest.version}: model.json lists no head.onnx")
        directory = self.version_dir(manifest.version)
        for name, expected in manifest.files.items():
            _verify_file(directory / name, expected, f"version {manifest.version}")

    def verify_backbone_file(self, backbone_id: str) -> None:
        _verify_file(self.backbone_dir(backbone_id) / "backbone.onnx", backbone_id, "backbone")

    # ---- writing -------------------------------------------------------------

    def publish_backbone(
        self,
        onnx_bytes: bytes,
        *,
        input_name: str,
        output_name: str,
        height: int,
        width: int,
        feature_dim: int,
        resize: str = "stretch",
        source: Mapping[str, Any] | None = None,
    ) -> BackboneManifest:
        """Store a backbone under its content hash (a no-op when it is already there)."""
        backbone_id = hashlib.sha256(onnx_bytes).hexdigest()
        manifest = BackboneManifest(
            id=backbone_id,
            input_name=input_name,
            output_name=output_name,
            height=height,
            width=width,
            feature_dim=feature_dim,
            resize=resize,
            source=source or {},
        )
        target = self.backbone_dir(backbone_id)
        if (target / "backbone.json").is_file():
            return self.backbone_manifest(backbone_id)
        files = {
            "backbone.onnx": onnx_bytes,
            "backbone.json": _dump_json(manifest.to_json()),
        }
        try:
            self._publish_dir(self.backbones_dir, backbone_id, files)
        except OSError:
            # Another writer published the same content first: same bytes, same id.
            if not (target / "backbone.json").is_file():
                raise
        return manifest

    def publish_version(
        self,
        *,
        head_onnx: bytes,
        labels: list[str],
        backbone: BackboneManifest,
        head_input: str,
        head_output: str,
        card: Mapping[str, Any] | None = None,
        card_files: Mapping[str, bytes] | None = None,
        parent: str | None = None,
        version: str | None = None,
    ) -> str:
        """Publish an immutable version directory; CURRENT is not touched."""
        version = version or new_version_id()
        _check_version_id(version)
        if not (self.backbone_dir(backbone.id) / "backbone.json").is_file():
            raise NotFound(f"backbone {backbone.id} must be published before a version using it")
        files: dict[str, bytes] = {"head.onnx": head_onnx}
        for name, data in (card_files or {}).items():
            files[f"card/{name}"] = data
        hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        document = {
            "format": MODEL_FORMAT,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "parent": parent,
            "labels": list(labels),
            "backbone_id": backbone.id,
            "input": {
                "height": backbone.height,
                "width": backbone.width,
                "dtype": "uint8",
                "layout": "NHWC",
                "resize": backbone.resize,
            },
            "head": {
                "input": head_input,
                "output": head_output,
                "feature_dim": backbone.feature_dim,
            },
            **dict(card or {}),
            "files": hashes,
        }
        files["model.json"] = _dump_json(document)
        self._publish_dir(self.versions_dir, version, files)
        return version

    def set_current(self, version: str) -> None:
        """Point CURRENT at a published version, atomically."""
        self.model_manifest(version)
        atomic_write_bytes(self.root / "CURRENT", f"{version}\n".encode())

    def remove_partials(self) -> list[Path]:
        """Delete the hidden temp directories that a crashed publication left behind."""
        removed = []
        for parent in (self.versions_dir, self.backbones_dir):
            if parent.is_dir():
                for entry in parent.iterdir():
                    if entry.name.startswith(".tmp-"):
                        shutil.rmtree(entry, ignore_errors=True)
                        removed.append(entry)
        return removed

    def _publish_dir(self, parent: Path, name: str, files: Mapping[str, bytes]) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
        try:
            for relative, data in files.items():
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                write_and_sync(path, data)
            for directory in {staging / r for r in files} | {staging}:
                fsync_dir(directory if directory.is_dir() else directory.parent)
            os.chmod(staging, 0o755)
            os.rename(staging, parent / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(parent)


def _check_version_id(version: str) -> None:
    if not _VERSION_ID.match(version):
        raise NotFound(
            f"{version!r} is not a valid version id (letters, digits, '.', '_', '-'; at most 128)"
        )


def _verify_file(path: Path, expected: str, what: str) -> None:
    if not path.is_file():
        raise ModelRejected(f"{what}: file {path.name} is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise ModelRejected(
            f"{what}: {path.name} has sha256 {actual[:12]}…, the manifest says {expected[:12]}…"
        )


def _dump_json(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
