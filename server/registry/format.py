"""The model registry format: manifests, hashes, signatures of files, CURRENT and
retention, over a `RegistryStorage` (a local folder here; object storage beside it).

    backbones/<sha256>/backbone.onnx, backbone.json   content-addressed, shared by all models
    versions/<id>/head.onnx, model.json, card/         the default model's versions, immutable
    CURRENT                                            the default model's served version id
    MODELS                                             the index of named models (JSON)
    versions.<model>/<id>/...                          a named model's versions
    CURRENT.<model>                                    a named model's served version id

The default model's keys are the ones every earlier release wrote, so a registry made
before there were named models is read unchanged: its model is the default model. Every
key keeps the storage seam's shape (pointers of one segment, groups of two), so the
folder and object storage hold named models without a change.

A version or backbone is published as one atomic group; CURRENT changes only by
compare-and-set, so two writers (a trainer and a rollback) cannot lose an update.
Every manifest names the sha256 of each file it covers, and every read of a model file
checks that hash on the very bytes it returns, which are the bytes ONNX Runtime loads.
Error messages name versions and files, never where the storage keeps them.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from tlserve.server.errors import (
    Conflict,
    InvalidInput,
    ModelRejected,
    NotFound,
    NotWritable,
    quoted,
)
from tlserve.server.imaging import InputSpec, ResizePolicy
from tlserve.server.registry.experiment import Experiment, ExperimentPointer
from tlserve.server.registry.local import LocalFolderStorage
from tlserve.server.registry.storage import (
    MissingObject,
    PointerChanged,
    RegistryStorage,
    WriteRefused,
)
from tlserve.server.store.labels import normalize_label

M = TypeVar("M")
MODEL_FORMAT = "tlserve.model/v1"
BACKBONE_FORMAT = "tlserve.backbone/v1"
_VERSION_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")
# Lower case, digits, '-' and '_': a name that is safe in a registry key, a URL path, a
# Prometheus label and a Kubernetes object name alike.
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MODELS_FORMAT = "tlserve.models/v1"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A file of a version: head.onnx, card/<name>; relative, plain names only.
_VERSION_FILE = re.compile(
    r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9_][A-Za-z0-9._-]{0,127}){0,3}$"
)


@contextmanager
def _writing() -> Iterator[None]:
    try:
        yield
    except WriteRefused as exc:
        raise NotWritable(
            f"the registry is not writable here: {exc}; give this process write access "
            "(its uid, or the pod's fsGroup) or make the change where it has it"
        ) from None


# A backbone no version uses yet is kept this long after its publication: a run of another
# model (or another trainer) may have published it and still be training the head that
# will use it; deleting it then fails that run's publication. Longer than any run.
UNUSED_BACKBONE_GRACE = timedelta(hours=24)


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
    resize: ResizePolicy
    source: Mapping[str, Any] = field(default_factory=dict)
    # When it was first published (ISO 8601); "" in what earlier releases wrote.
    published_at: str = ""

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
            **({"published_at": self.published_at} if self.published_at else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BackboneManifest:
        if data.get("format") != BACKBONE_FORMAT:
            raise ValueError(
                f"backbone.json format is {data.get('format')!r}, expected {BACKBONE_FORMAT!r}"
            )
        inp, out = data["input"], data["output"]
        try:
            resize = ResizePolicy(inp.get("resize", ResizePolicy.STRETCH))
        except ValueError:
            raise ValueError(
                f"unknown resize policy {inp.get('resize')!r}; "
                f"expected one of {', '.join(ResizePolicy)}"
            ) from None
        return cls(
            id=str(data["id"]),
            input_name=str(inp["name"]),
            output_name=str(out["name"]),
            height=int(inp["height"]),
            width=int(inp["width"]),
            feature_dim=int(out["dim"]),
            resize=resize,
            source=dict(data.get("source", {})),
            published_at=str(data.get("published_at", "")),
        )

    def published_within(self, grace: timedelta, now: datetime) -> bool:
        """Published less than `grace` before `now` (False when the time is not known)."""
        try:
            published = datetime.fromisoformat(self.published_at)
        except ValueError:
            return False
        return now - published < grace


class HeadScores(StrEnum):
    """What a head outputs: probabilities (rows sum to 1), or logits the server softmaxes."""

    PROBABILITIES = "probabilities"
    LOGITS = "logits"


@dataclass(frozen=True, slots=True)
class ModelManifest:
    """A version's model.json: the head, its labels, its backbone and its card."""

    version: str
    labels: tuple[str, ...]
    backbone_id: str
    head_input: str
    head_output: str
    head_scores: HeadScores
    # What model.json claims about the input and the features; the loader checks these
    # against the backbone, so a manifest that disagrees with its graphs is refused.
    input_height: int
    input_width: int
    feature_dim: int
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
            raise ValueError(f"labels must be at least 2 distinct names, got {list(labels)[:20]}")
        for label in labels:
            # The same rules as feedback: printable, normalised, no control or bidi
            # characters, so a label never garbles a log line, a CSV or a terminal.
            try:
                clean = normalize_label(label)
            except InvalidInput as exc:
                raise ValueError(str(exc)) from None
            if clean != label:
                raise ValueError(f"label {label!r} is not in normal form (it would be {clean!r})")
        head = data["head"]
        scores = str(head.get("scores", HeadScores.PROBABILITIES))
        if scores not in set(HeadScores):
            raise ValueError(
                f"head.scores is {scores[:32]!r}; expected one of {', '.join(HeadScores)}"
            )
        return cls(
            version=str(data["version"]),
            labels=labels,
            backbone_id=str(data["backbone_id"]),
            head_input=str(head["input"]),
            head_output=str(head["output"]),
            head_scores=HeadScores(scores),
            input_height=int(data["input"]["height"]),
            input_width=int(data["input"]["width"]),
            feature_dim=int(head["feature_dim"]),
            files=_version_files(data["files"]),
            created_at=str(data.get("created_at", "")),
            parent=data.get("parent"),
            raw=data,
        )


def _version_files(files: Any) -> dict[str, str]:
    """model.json's `files`: names inside the version folder (no absolute path, no `..`)
    and sha256 hex digests; anything else is a ValueError that refuses the version."""
    if not isinstance(files, Mapping):
        raise ValueError("files must be an object of file name to sha256")
    checked = {}
    for key, digest in files.items():
        name = str(key)
        if not _VERSION_FILE.match(name) or ".." in name.split("/"):
            raise ValueError(
                f"files names {quoted(name, 80)}, which is not a file inside the version"
            )
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ValueError(f"files gives {quoted(name, 80)} no sha256 hex digest")
        checked[name] = digest
    return checked


class _Any:
    """The default of `set_current(expected=...)`: whatever CURRENT holds."""


ANY = _Any()
CURRENT = "CURRENT"
MODELS = "MODELS"
_CAS_ATTEMPTS = 5


def check_model_name(name: str) -> str:
    """A named model's name, or InvalidInput saying what a name may hold."""
    if not MODEL_NAME.match(name):
        raise InvalidInput(
            f"model name {quoted(name, 80)} is not valid: lower-case letters, digits, '-' and "
            "'_', starting with a letter or digit, at most 63 characters"
        )
    return name


class Registry:
    """Reads and (for the trainer, rollbacks and tests) writes the registry format.

    One instance reads and writes one model's versions and pointer: the default model's,
    or a named model's (`for_model`); backbones and the model index are shared by all."""

    def __init__(self, storage: RegistryStorage, model: str | None = None) -> None:
        self.storage = storage
        self.model = None if model is None else check_model_name(model)
        self._versions = "versions" if model is None else f"versions.{model}"
        self._pointer = CURRENT if model is None else f"{CURRENT}.{model}"

    @classmethod
    def local(cls, root: Path) -> Registry:
        return cls(LocalFolderStorage(root))

    @property
    def pointer(self) -> str:
        """The name of this model's served-version pointer (CURRENT for the default)."""
        return self._pointer

    def for_model(self, model: str | None) -> Registry:
        """The same registry, reading and writing `model`'s versions (None: the default)."""
        return Registry(self.storage, model)

    def describe(self) -> str:
        return self.storage.describe()

    # ---- reading -------------------------------------------------------------

    def current(self) -> str | None:
        """The version this model's pointer names, or None before its first publication."""
        raw = self.storage.read_pointer(self._pointer)
        if raw is None:
            return None
        return _parse_current(raw, self._pointer)

    def versions(self) -> list[str]:
        """This model's published versions, newest first."""
        names = self.storage.list(self._versions)
        return sorted((v for v in names if _VERSION_ID.match(v)), reverse=True)

    def model_names(self) -> list[str]:
        """The named models the index lists (the default model is never listed)."""
        raw = self.storage.read_pointer(MODELS)
        return [] if raw is None else _parse_model_index(raw)

    def model_manifest(self, version: str) -> ModelManifest:
        _check_version_id(version)
        try:
            raw = self.storage.read(f"{self._versions}/{version}/model.json")
        except MissingObject:
            raise NotFound(f"model version {version!r} is not in the registry") from None
        manifest = _parse_manifest(ModelManifest.from_json, raw, f"version {version}: model.json")
        if manifest.version != version:
            raise ModelRejected(f"version {version}: model.json names version {manifest.version!r}")
        return manifest

    def has_backbone(self, backbone_id: str) -> bool:
        return bool(_SHA256.match(backbone_id)) and self.storage.exists(
            f"backbones/{backbone_id}/backbone.json"
        )

    def backbone_manifest(self, backbone_id: str) -> BackboneManifest:
        what = f"backbone {backbone_id[:12]}"
        if not _SHA256.match(backbone_id):
            raise ModelRejected(f"backbone id {quoted(backbone_id, 80)} is not a sha256 hex digest")
        try:
            raw = self.storage.read(f"backbones/{backbone_id}/backbone.json")
        except MissingObject:
            raise ModelRejected(f"{what} is missing from the registry") from None
        manifest = _parse_manifest(BackboneManifest.from_json, raw, f"{what}: backbone.json")
        if manifest.id != backbone_id:
            raise ModelRejected(f"{what}: backbone.json names id {manifest.id!r}")
        return manifest

    def read_version_file(self, manifest: ModelManifest, name: str) -> bytes:
        """A file of the version, read once and checked against model.json's sha256."""
        expected = manifest.files.get(name)
        if expected is None:
            raise ModelRejected(f"version {manifest.version}: model.json lists no {name}")
        return self._read_verified(
            f"{self._versions}/{manifest.version}/{name}", expected, f"version {manifest.version}"
        )

    def read_backbone_onnx(self, backbone_id: str) -> bytes:
        """The backbone's ONNX bytes, checked against its id (their sha256)."""
        return self._read_verified(
            f"backbones/{backbone_id}/backbone.onnx", backbone_id, f"backbone {backbone_id[:12]}"
        )

    def verify_version(self, manifest: ModelManifest) -> bytes:
        """Every file model.json lists is there with the recorded sha256; returns
        head.onnx's verified bytes."""
        if "head.onnx" not in manifest.files:
            raise ModelRejected(f"version {manifest.version}: model.json lists no head.onnx")
        head = b""
        for name in manifest.files:
            data = self.read_version_file(manifest, name)
            if name == "head.onnx":
                head = data
        return head

    def _read_verified(self, key: str, expected: str, what: str) -> bytes:
        name = key.rsplit("/", 1)[-1]
        try:
            data = self.storage.read_content(key, expected)
        except MissingObject:
            raise ModelRejected(f"{what}: file {name} is missing") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ModelRejected(
                f"{what}: {name} has sha256 {actual[:12]}…, the manifest says {expected[:12]}…"
            )
        return data

    # ---- writing -------------------------------------------------------------

    @_writing()
    def publish_backbone(
        self,
        onnx_bytes: bytes,
        *,
        input_name: str,
        output_name: str,
        height: int,
        width: int,
        feature_dim: int,
        resize: ResizePolicy = ResizePolicy.STRETCH,
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
            published_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        files = {"backbone.onnx": onnx_bytes, "backbone.json": _dump_json(manifest.to_json())}
        if not self.storage.publish(f"backbones/{backbone_id}", files):
            # Published before (by us or another writer): same bytes, same id.
            return self.backbone_manifest(backbone_id)
        return manifest

    @_writing()
    def publish_version(
        self,
        *,
        head_onnx: bytes,
        labels: list[str],
        backbone: BackboneManifest,
        head_input: str,
        head_output: str,
        head_scores: HeadScores = HeadScores.PROBABILITIES,
        card: Mapping[str, Any] | None = None,
        card_files: Mapping[str, bytes] | None = None,
        extra_files: Mapping[str, bytes] | None = None,
        parent: str | None = None,
        version: str | None = None,
    ) -> str:
        """Publish an immutable version; CURRENT is not touched. `extra_files` sit beside
        head.onnx (the server reads them: the drift reference), `card_files` under card/."""
        version = version or new_version_id()
        _check_version_id(version)
        if not self.has_backbone(backbone.id):
            raise NotFound(f"backbone {backbone.id} must be published before a version using it")
        files: dict[str, bytes] = {"head.onnx": head_onnx}
        for name, data in (card_files or {}).items():
            files[f"card/{name}"] = data
        for name, data in (extra_files or {}).items():
            if name in files or name == "model.json" or "/" in name:
                raise ValueError(f"a version's extra file cannot be named {name!r}")
            files[name] = data
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
                "scores": head_scores,
            },
            **dict(card or {}),
            **({"model": self.model} if self.model is not None else {}),
            "files": hashes,
        }
        files["model.json"] = _dump_json(document)
        if not self.storage.publish(f"{self._versions}/{version}", files):
            raise Conflict(f"version {version} is already published; versions are immutable")
        return version

    @_writing()
    def set_current(self, version: str, *, expected: str | _Any | None = ANY) -> None:
        """Point CURRENT at a published version.

        With `expected`, only if CURRENT still names that version (None: unset);
        otherwise Conflict, and CURRENT stays as another writer left it."""
        self.model_manifest(version)
        value = f"{version}\n".encode()
        if not isinstance(expected, _Any):
            previous = None if expected is None else f"{expected}\n".encode()
            try:
                self.storage.compare_and_set_pointer(self._pointer, previous, value)
            except PointerChanged:
                now = self.current() or "nothing"
                raise Conflict(
                    f"{self._pointer} moved from {expected or 'nothing'} to {now} "
                    f"before {version} could be set; read it again and retry"
                ) from None
            return
        for _ in range(_CAS_ATTEMPTS):
            try:
                self.storage.compare_and_set_pointer(
                    self._pointer, self.storage.read_pointer(self._pointer), value
                )
                return
            except PointerChanged:
                continue
        raise Conflict(f"{self._pointer} kept changing; {version} was not set")

    def experiment(self) -> tuple[Experiment | None, bytes | None]:
        """This model's experiment (running or how the last one ended) and its bytes, for
        `replace_experiment`; (None, None) before the first one."""
        return ExperimentPointer(self.storage, self.model).read()

    @_writing()
    def replace_experiment(self, expected: bytes | None, experiment: Experiment) -> bool:
        """Write the experiment if its pointer still holds `expected`; False if it moved."""
        return ExperimentPointer(self.storage, self.model).replace(expected, experiment)

    @_writing()
    def add_model(self, name: str) -> None:
        """List a named model in the index (a no-op when it is listed); its versions and
        pointer are `for_model(name)`'s. Servers load it once its pointer is set."""
        self._change_index(lambda names: names | {check_model_name(name)})

    @_writing()
    def remove_model(self, name: str) -> None:
        """Drop a named model from the index: servers drain and unload it. Its versions
        stay until retention removes them."""
        self._change_index(lambda names: names - {name})

    def _change_index(self, change: Callable[[set[str]], set[str]]) -> None:
        for _ in range(_CAS_ATTEMPTS):
            raw = self.storage.read_pointer(MODELS)
            names = set() if raw is None else set(_parse_model_index(raw))
            wanted = change(names)
            if wanted == names and raw is not None:
                return
            document = {"format": MODELS_FORMAT, "models": sorted(wanted)}
            try:
                self.storage.compare_and_set_pointer(MODELS, raw, _dump_json(document))
                return
            except PointerChanged:
                continue
        raise Conflict("the model index kept changing; try again")

    @_writing()
    def remove_partials(self) -> list[str]:
        """Clear what a crashed publication left behind."""
        return self.storage.remove_partials()

    @_writing()
    def retain(self, keep_versions: int, now: datetime | None = None) -> list[str]:
        """Keep this model's newest versions, its served version and the one that replaced,
        every backbone a kept version of any model uses, and every backbone published in
        the last UNUSED_BACKBONE_GRACE; delete the rest. Returns the deleted versions."""
        removed = [v for v in self.versions() if v not in self._protected(keep_versions)]
        for version in removed:
            self.storage.delete(f"{self._versions}/{version}")
        used = set()
        for model in [self, *(self.for_model(name) for name in self.model_names())]:
            # Another model's retention setting is its own: every version it has counts.
            protected = model._protected(keep_versions) if model is self else set(model.versions())
            for version in protected:
                try:
                    used.add(model.model_manifest(version).backbone_id)
                except (ModelRejected, NotFound):
                    continue  # unreadable or gone: keeps nothing alive
        moment = now or datetime.now(UTC)
        for backbone_id in self.storage.list("backbones"):
            if not _SHA256.match(backbone_id) or backbone_id in used:
                continue
            try:
                fresh = self.backbone_manifest(backbone_id).published_within(
                    UNUSED_BACKBONE_GRACE, moment
                )
            except ModelRejected:
                fresh = False  # unreadable: nothing can load it, it goes
            if not fresh:
                self.storage.delete(f"backbones/{backbone_id}")
        return removed

    def _protected(self, keep_versions: int) -> set[str]:
        versions = self.versions()
        protected = set(versions[:keep_versions])
        current = self.current()
        if current is not None:
            protected.add(current)
            parent = self.model_manifest(current).parent
            if parent:
                protected.add(parent)
        experiment, _ = self.experiment()
        if experiment is not None and experiment.running:
            # Servers load it (again, after a restart) while the experiment runs.
            protected.add(experiment.challenger)
        return protected & set(versions)


def _parse_manifest(parse: Callable[[Any], M], raw: bytes, what: str) -> M:
    """A manifest from JSON bytes; any malformation is ModelRejected naming the file."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ModelRejected(f"{what} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ModelRejected(f"{what} is invalid: a JSON {type(document).__name__}, not an object")
    try:
        return parse(document)
    except KeyError as exc:
        raise ModelRejected(f"{what} is invalid: it has no {exc} field") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelRejected(f"{what} is invalid: {exc}") from None


def _parse_current(raw: bytes, pointer: str = CURRENT) -> str | None:
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ModelRejected(f"{pointer} is not UTF-8 text; it must hold one version id") from None
    if not text:
        raise ModelRejected(f"{pointer} is empty; it must hold one version id")
    if not _VERSION_ID.match(text):
        raise ModelRejected(f"{pointer} holds {quoted(text, 80)}, which is not a version id")
    return text


def _parse_model_index(raw: bytes) -> list[str]:
    """MODELS: {"format": "tlserve.models/v1", "models": [names]}; ModelRejected otherwise."""
    try:
        document = json.loads(raw)
        if document.get("format") != MODELS_FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {MODELS_FORMAT!r}")
        names = document["models"]
        if not isinstance(names, list) or not all(
            isinstance(n, str) and MODEL_NAME.match(n) for n in names
        ):
            raise ValueError("models must be a list of model names")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelRejected(f"the model index (MODELS) is invalid: {exc}") from None
    return list(dict.fromkeys(names))


def _check_version_id(version: str) -> None:
    if not _VERSION_ID.match(version):
        raise NotFound(
            f"{quoted(version, 80)} is not a valid version id "
            "(letters, digits, '.', '_', '-'; at most 128)"
        )


def _dump_json(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
