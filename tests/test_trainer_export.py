"""Export parity: keras.applications backbones (weights=None) as ONNX with one uint8
input, matching Keras to 1e-4 on the same images."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from examples.colour_model import publish_colour_version
from tlserve.server.registry import Registry
from tlserve.trainer.backbones import build_backbone, features_function
from tlserve.trainer.errors import TrainerError
from tlserve.trainer.onnx_export import check_parity, export_function

pytestmark = pytest.mark.slow  # TensorFlow: exports real keras.applications backbones

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("MobileNetV2", 64),
        ("EfficientNetB0", 64),
        ("ResNet50", 64),
        ("MobileNetV3Small", 64),
        ("MobileNetV3Large", 64),
        ("VGG16", 64),
        ("InceptionV3", 75),  # its smallest input
    ],
)
def test_backbone_export_matches_keras(name: str, size: int) -> None:
    keras.utils.set_random_seed(7)
    backbone = build_backbone(name, weights="none", input_size=size)
    images = np.random.default_rng(1).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    function = features_function(backbone)
    data = export_function(function, input_name="images", output_name="features", sample=images)
    model = onnx.load_from_string(data)
    assert [i.name for i in model.graph.input] == ["images"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    other = np.random.default_rng(2).integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    assert check_parity(data, function, other, "images", "features", atol=1e-4) <= 1e-4 * max(
        1.0, float(np.abs(function(other)["features"].numpy()).max())
    )


EXPORT_IN_A_FRESH_PROCESS = """
import hashlib, keras, numpy as np
from tlserve.trainer.backbones import build_backbone, features_function
from tlserve.trainer.onnx_export import export_function
keras.utils.set_random_seed(7)
backbone = build_backbone("MobileNetV2", weights="none", input_size=32)
sample = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
data = export_function(
    features_function(backbone), input_name="images", output_name="features", sample=sample
)
print(hashlib.sha256(data).hexdigest())
"""


def test_the_same_backbone_exports_to_the_same_bytes() -> None:
    """A backbone's registry id is the sha256 of its ONNX bytes: two models (or trainers
    on two machines) on one backbone share it only if every export of it is byte for byte
    the same. tf2onnx's counters made each export differ (`new_shape__128`, `unk__130`),
    and `make demo`'s two models got two backbones."""
    sample = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)

    def export() -> str:
        keras.utils.set_random_seed(7)
        backbone = build_backbone("MobileNetV2", weights="none", input_size=32)
        data = export_function(
            features_function(backbone), input_name="images", output_name="features", sample=sample
        )
        return hashlib.sha256(data).hexdigest()

    here = {export(), export()}
    assert len(here) == 1
    elsewhere = subprocess.run(
        [sys.executable, "-c", EXPORT_IN_A_FRESH_PROCESS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=True,
    )
    assert elsewhere.stdout.strip().splitlines()[-1] in here


def test_cut_layer_and_pooling() -> None:
    backbone = build_backbone(
        "MobileNetV2", weights="none", input_size=64, cut_layer="block_6_expand", pooling="max"
    )
    assert backbone.feature_dim == 192 and backbone.source["cut_layer"] == "block_6_expand"
    with pytest.raises(TrainerError, match="has no layer 'mixed99'"):
        build_backbone("MobileNetV2", weights="none", input_size=64, cut_layer="mixed99")


def test_unknown_backbone_and_missing_weights() -> None:
    with pytest.raises(TrainerError, match="unknown backbone 'AlexNet'"):
        build_backbone("AlexNet")
    with pytest.raises(
        TrainerError, match=r"TLSERVE_BACKBONE_WEIGHTS names /nope\.h5, which is not a file"
    ):
        build_backbone("MobileNetV2", weights="/nope.h5", input_size=64)


@pytest.mark.timeout(120)
def test_offline_imagenet_download_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # No network here: Keras' download fails; the error must say what to put where.
    with pytest.raises(TrainerError) as info:
        build_backbone("MobileNetV2", weights="imagenet", input_size=96)
    message = str(info.value)
    assert "mobilenet_v2_weights" in message and str(tmp_path / "models") in message
    assert "TLSERVE_BACKBONE_WEIGHTS" in message


def test_fused_export_of_a_version(tmp_path: Path) -> None:
    registry = Registry.local(tmp_path / "registry")
    version = publish_colour_version(registry)
    output = tmp_path / "fused.onnx"
    completed = subprocess.run(
        [sys.executable, "-m", "tlserve.trainer.main", "export", "current", str(output)],
        cwd=ROOT,
        env={"TLSERVE_REGISTRY_DIR": str(tmp_path / "registry"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["version"] == version and report["max_abs_difference"] <= 1e-5
    fused = onnx.load(output)
    assert [i.name for i in fused.graph.input] == ["images"]
    assert [o.name for o in fused.graph.output] == ["probabilities"]
    # Plain onnxruntime, no registry: the metadata says what goes in and comes out.
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    labels = json.loads(meta["tlserve.labels"])
    spec = json.loads(meta["tlserve.input"])
    assert meta["tlserve.version"] == version and labels == report["labels"]
    assert (spec["height"], spec["width"], spec["dtype"], spec["layout"]) == (
        32,
        32,
        "uint8",
        "NHWC",
    )
    assert spec["resize"] in {"stretch", "center_crop", "pad"}
    red = np.full((1, spec["height"], spec["width"], 3), (230, 20, 20), dtype=np.uint8)
    (probabilities,) = session.run(None, {spec["name"]: red})
    assert labels[int(probabilities.argmax())] == "red"
