"""Broken versions, one table: each is published and pointed at by CURRENT while clients
keep predicting; each must be refused (logged, counted) while the old version answers
every request, and ListModels must keep working."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from examples.colour_model import OPSET, linear_head, publish_backbone, publish_colour_version
from tests.support import ServerThread, solid_image
from tlserve.clients import TlserveClient
from tlserve.server.registry import HeadScores, Registry


@dataclass
class Setup:
    root: Path
    registry: Registry
    good: str
    outside: Path


def _head(nodes: list[onnx.NodeProto], output: str, extra: list[onnx.TensorProto]) -> bytes:
    weights = np.zeros((3, 3), dtype=np.float32)
    np.fill_diagonal(weights, 20.0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["logits"]), *nodes],
        "head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(weights, "W"), *extra],
    )
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    return model.SerializeToString()


def nan_for_nonzero_input_head() -> bytes:
    """softmax(x W) + 0 * log(1 - sum(x)): finite for black images, NaN once the mean
    colour sums past 1 (white, noise) — a head an all-zero warm-up would pass."""
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    return _head(
        [
            helper.make_node("Softmax", ["logits"], ["soft"], axis=-1),
            helper.make_node("ReduceSum", ["features", "axes"], ["total"], keepdims=1),
            helper.make_node("Sub", ["one", "total"], ["rest"]),
            helper.make_node("Log", ["rest"], ["log"]),
            helper.make_node("Mul", ["zero", "log"], ["nan_or_zero"]),
            helper.make_node("Add", ["soft", "nan_or_zero"], ["probabilities"]),
        ],
        "probabilities",
        [one, zero, axes],
    )


def logits_head() -> bytes:
    return _head([helper.make_node("Identity", ["logits"], ["probabilities"])], "probabilities", [])


def _publish(setup: Setup, head_onnx: bytes, **manifest: object) -> str:
    backbone = publish_backbone(setup.registry)
    version = setup.registry.publish_version(
        head_onnx=head_onnx,
        labels=["red", "green", "blue"],
        backbone=backbone,
        head_input="features",
        head_output="probabilities",
        parent=setup.good,
        **manifest,  # type: ignore[arg-type]
    )
    return version


def _edit_manifest(setup: Setup, version: str, edit: Callable[[dict], object]) -> None:  # type: ignore[type-arg]
    path = setup.root / "versions" / version / "model.json"
    document = json.loads(path.read_text())
    replaced = edit(document)
    path.write_text(json.dumps(document if replaced is None else replaced))


def _good_copy(setup: Setup) -> str:
    return _publish(setup, linear_head(np.eye(3, dtype=np.float32) * 20))


def wrong_input_size(setup: Setup) -> str:
    version = _good_copy(setup)
    _edit_manifest(setup, version, lambda m: m["input"].update(height=64))
    return version


def wrong_feature_dim(setup: Setup) -> str:
    version = _good_copy(setup)
    _edit_manifest(setup, version, lambda m: m["head"].update(feature_dim=4))
    return version


def no_input(setup: Setup) -> str:
    version = _good_copy(setup)
    _edit_manifest(setup, version, lambda m: m.__delitem__("input"))
    return version


def label(text: str) -> Callable[[Setup], str]:
    def damage(setup: Setup) -> str:
        version = _good_copy(setup)
        _edit_manifest(setup, version, lambda m: m.update(labels=["red", text, "blue"]))
        return version

    return damage


def manifest_is_an_array(setup: Setup) -> str:
    version = _good_copy(setup)
    _edit_manifest(setup, version, lambda m: [m])
    return version


def version_folder_outside(setup: Setup) -> str:
    version = _good_copy(setup)
    folder = setup.root / "versions" / version
    shutil.move(folder, setup.outside / version)
    folder.symlink_to(setup.outside / version, target_is_directory=True)
    return version


def head_file_outside(setup: Setup) -> str:
    version = _good_copy(setup)
    head = setup.root / "versions" / version / "head.onnx"
    shutil.move(head, setup.outside / "head.onnx")
    head.symlink_to(setup.outside / "head.onnx")
    return version


def nan_head(setup: Setup) -> str:
    return _publish(setup, nan_for_nonzero_input_head())


def undeclared_logits(setup: Setup) -> str:
    return _publish(setup, logits_head())


def truncated_onnx(setup: Setup) -> str:
    """Cut short, with a matching hash: the file is what the manifest says, and broken."""
    head = linear_head(np.eye(3, dtype=np.float32))
    return _publish(setup, head[: len(head) // 2])


def hash_mismatch(setup: Setup) -> str:
    version = _good_copy(setup)
    head = setup.root / "versions" / version / "head.onnx"
    head.write_bytes(head.read_bytes()[:-1] + b"x")
    return version


def files_outside(name: str) -> Callable[[Setup], str]:
    """model.json's `files` names a file outside the version (with a bogus hash): served
    before, since only head.onnx was read on load."""

    def damage(setup: Setup) -> str:
        version = _good_copy(setup)
        _edit_manifest(setup, version, lambda m: m["files"].update({name: "0" * 64}))
        return version

    return damage


def card_file_changed(setup: Setup) -> str:
    """A card file that no longer matches the hash model.json records for it."""
    version = _publish(
        setup, linear_head(np.eye(3, dtype=np.float32) * 20), card_files={"curve.png": b"png"}
    )
    (setup.root / "versions" / version / "card" / "curve.png").write_bytes(b"not it")
    return version


def missing_backbone(setup: Setup) -> str:
    version = publish_colour_version(setup.registry, size=24, make_current=False)
    backbone = setup.registry.model_manifest(version).backbone_id
    shutil.rmtree(setup.root / "backbones" / backbone)
    return version


def current_names_a_missing_version(setup: Setup) -> str:
    return "20990101-000000-000000-dead"


def current_escapes(setup: Setup) -> str:
    return "../.."


# Each damage and what its refusal must say (in the server's log line for it).
DAMAGES: dict[str, tuple[Callable[[Setup], str], str]] = {
    "model.json input size differs from the backbone": (
        wrong_input_size,
        "model.json says input 64x32 and 3 features, its backbone",
    ),
    "model.json feature_dim differs from the backbone": (
        wrong_feature_dim,
        "model.json says input 32x32 and 4 features, its backbone",
    ),
    "model.json without input": (no_input, "model.json is invalid: it has no 'input' field"),
    "label with NUL": (label("gr\x00een"), "label contains U+0000"),
    "label with bidi override": (label("gr\u202eeen"), "RIGHT-TO-LEFT OVERRIDE"),
    "label with newline": (label("gr\neen"), "label contains U+000A"),
    "model.json is a JSON array": (manifest_is_an_array, "a JSON list, not an object"),
    "version folder symlinked outside": (version_folder_outside, "is not in the registry"),
    "head.onnx symlinked outside": (head_file_outside, "file head.onnx is missing"),
    "head gives NaN for non-zero input": (nan_head, "warm-up produced non-finite scores"),
    "head gives logits, undeclared": (undeclared_logits, "scores are not probabilities"),
    "truncated ONNX": (truncated_onnx, "head.onnx does not load"),
    "hash mismatch": (hash_mismatch, "head.onnx has sha256"),
    "missing backbone": (missing_backbone, "is missing from the registry"),
    "model.json files names /etc/hostname": (
        files_outside("/etc/hostname"),
        "files names '/etc/hostname', which is not a file inside the version",
    ),
    "model.json files names ../../../../dev/zero": (
        files_outside("../../../../dev/zero"),
        "files names '../../../../dev/zero', which is not a file inside the version",
    ),
    "a card file changed after publication": (card_file_changed, "curve.png has sha256"),
    "CURRENT names a missing version": (
        current_names_a_missing_version,
        "'20990101-000000-000000-dead' is not in the registry",
    ),
    "CURRENT is ../..": (current_escapes, "CURRENT holds '../..', which is not a version id"),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_a_broken_version_is_refused_under_load(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "registry"
    registry = Registry.local(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    setup = Setup(root, registry, publish_colour_version(registry), outside)
    server = ServerThread(tmp_path, refused_retry_seconds=60.0).start()
    failures: list[str] = []
    answered: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with TlserveClient(server.target, retries=0) as client:
            while not stop.is_set():
                try:
                    result = client.predict([solid_image("green")])
                    answered.append(f"{result.model_version}:{result.predictions[0].label}")
                except Exception as exc:  # every failure counts, whatever its kind
                    failures.append(repr(exc))

    workers = [threading.Thread(target=load) for _ in range(3)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(0.2)
        damage, reason = DAMAGES[case]
        bad = damage(setup)
        (root / "CURRENT.new").write_text(bad + "\n")
        (root / "CURRENT.new").replace(root / "CURRENT")
        value = server.metrics_registry.get_sample_value
        deadline = time.monotonic() + 10
        while True:
            refused = (
                value("tlserve_model_swaps_total", {"model": "tlserve", "result": "refused"}) or 0
            )
            problems = value("tlserve_registry_current_problems_total") or 0
            if refused + problems >= 1:
                break
            assert time.monotonic() < deadline, f"{case}: never refused"
            time.sleep(0.02)
        time.sleep(0.3)  # several polls under load after the refusal
        stop.set()
        for worker in workers:
            worker.join(10)
        assert refused + problems == 1, "refused once, not on every poll"
        reasons = [
            r.getMessage()
            for r in caplog.records
            if r.name == "tlserve.server.model_slot"
            and ("refused version" in r.getMessage() or "CURRENT is unusable" in r.getMessage())
        ]
        assert len(reasons) == 1 and reason in reasons[0], reasons
        assert failures == []
        assert len(answered) > 20 and set(answered) == {f"{setup.good}:green"}
        with TlserveClient(server.target) as client:
            models, _ = client.list_models()
        listed = {m.version: m for m in models}
        assert listed[setup.good].serving
        if bad in listed and listed[bad].error:
            assert "/tmp" not in listed[bad].error
    finally:
        stop.set()
        server.stop()


def test_a_head_declared_as_logits_is_served_with_softmax(tmp_path: Path) -> None:
    registry = Registry.local(tmp_path / "registry")
    setup = Setup(tmp_path / "registry", registry, publish_colour_version(registry), tmp_path)
    declared = _publish(setup, logits_head(), head_scores=HeadScores.LOGITS)
    registry.set_current(declared)
    server = ServerThread(tmp_path).start()
    try:
        server.wait_for_version(declared)
        with TlserveClient(server.target) as client:
            prediction = client.predict_one(solid_image("blue"))
        assert prediction.label == "blue"
        assert 0.99 < sum(c.score for c in prediction.top) <= 1.0 + 1e-5
    finally:
        server.stop()


def test_unreadable_versions_are_listed_with_their_error(tmp_path: Path) -> None:
    registry = Registry.local(tmp_path / "registry")
    setup = Setup(tmp_path / "registry", registry, publish_colour_version(registry), tmp_path)
    broken = manifest_is_an_array(setup)
    server = ServerThread(tmp_path).start()
    try:
        with TlserveClient(server.target) as client:
            models, current = client.list_models()
    finally:
        server.stop()
    listed = {m.version: m for m in models}
    assert current == setup.good and listed[setup.good].serving and not listed[setup.good].error
    assert "model.json is invalid" in listed[broken].error and listed[broken].labels == ()
