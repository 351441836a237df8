"""Frozen feature extractors: keras.applications models by name, or a user's Keras model
cut at a named layer. Each takes uint8 NHWC images and does its own preprocessing in the
graph, so the exported ONNX takes exactly what the server sends."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tlserve.trainer.errors import TrainerError

# name -> (constructor, preprocess_input); preprocessing runs inside the graph.
_APPLICATIONS: dict[str, tuple[Callable[..., keras.Model], Callable[[Any], Any]]] = {
    "MobileNetV2": (
        keras.applications.MobileNetV2,
        keras.applications.mobilenet_v2.preprocess_input,
    ),
    "MobileNetV3Small": (
        keras.applications.MobileNetV3Small,
        keras.applications.mobilenet_v3.preprocess_input,
    ),
    "MobileNetV3Large": (
        keras.applications.MobileNetV3Large,
        keras.applications.mobilenet_v3.preprocess_input,
    ),
    "EfficientNetB0": (
        keras.applications.EfficientNetB0,
        keras.applications.efficientnet.preprocess_input,
    ),
    "EfficientNetB1": (
        keras.applications.EfficientNetB1,
        keras.applications.efficientnet.preprocess_input,
    ),
    "ResNet50": (keras.applications.ResNet50, keras.applications.resnet50.preprocess_input),
    "InceptionV3": (
        keras.applications.InceptionV3,
        keras.applications.inception_v3.preprocess_input,
    ),
    "VGG16": (keras.applications.VGG16, keras.applications.vgg16.preprocess_input),
}
APPLICATION_NAMES = tuple(_APPLICATIONS)


@dataclass
class Backbone:
    """A frozen extractor: `model` maps uint8 [N, H, W, 3] to float32 [N, feature_dim]."""

    model: keras.Model
    height: int
    width: int
    feature_dim: int
    source: dict[str, Any] = field(default_factory=dict)


def card_path(model_file: Path) -> Path:
    """The JSON card beside a model file that says what it was trained on."""
    return model_file.with_name(model_file.name + ".card.json")


def check_backbone(name: str, weights: str) -> None:
    """What `build_backbone` would refuse about its settings, found without building
    anything: the trainer checks at start, so a wrong setting stops it at once (it used to
    start, and fail at its first run, once a label had arrived)."""
    if name in _APPLICATIONS:
        if weights.lower() != "none" and weights != "imagenet" and not Path(weights).is_file():
            raise TrainerError(
                f"TLSERVE_BACKBONE_WEIGHTS names {weights}, which is not a file; use imagenet, "
                "none, or the path of a weights file"
            )
        return
    if name.endswith((".keras", ".h5")) or os.sep in name or Path(name).is_file():
        if not Path(name).is_file():
            raise TrainerError(
                f"TLSERVE_BACKBONE names {name}, which is not a file; give the path of a "
                f".keras/.h5 model, or one of {', '.join(APPLICATION_NAMES)}"
            )
        return
    raise TrainerError(
        f"unknown backbone {name!r} (TLSERVE_BACKBONE): use one of "
        f"{', '.join(APPLICATION_NAMES)} or the path of a .keras/.h5 model file"
    )


def build_backbone(
    name: str,
    *,
    weights: str = "imagenet",
    input_size: int = 224,
    cut_layer: str = "",
    pooling: str = "avg",
) -> Backbone:
    """A keras.applications model by name, or a Keras model file (cut at `cut_layer`)."""
    check_backbone(name, weights)
    if name in _APPLICATIONS:
        constructor, preprocess = _APPLICATIONS[name]
        base = _application(constructor, name, weights, input_size)
        source: dict[str, Any] = {"kind": "keras.applications", "name": name, "weights": weights}
    else:  # a model file, which check_backbone found
        path = Path(name)
        base = keras.models.load_model(path, compile=False)
        preprocess = _scale_to_unit
        source = {"kind": "model_file", "path": str(path), "name": path.name}
        card = card_path(path)
        if card.is_file():  # what the file was trained on (e.g. `tlserve-trainer pretrain`'s)
            source["card"] = json.loads(card.read_text())
    if cut_layer:
        try:
            output = base.get_layer(cut_layer).output
        except ValueError:
            raise TrainerError(
                f"backbone {name} has no layer {cut_layer!r}; some of its layers: "
                f"{', '.join(layer.name for layer in base.layers[-12:])}"
            ) from None
        base = keras.Model(base.inputs, output, name=f"{base.name}_cut_{cut_layer}")
        source["cut_layer"] = cut_layer
    base.trainable = False
    height, width, channels = base.input_shape[1:4]
    if channels not in (1, 3):
        raise TrainerError(f"backbone input has {channels} channels; 1 or 3 are supported")

    images = keras.Input((height, width, 3), dtype="uint8", name="images")
    x = keras.ops.cast(images, "float32")
    if channels == 1:
        x = keras.ops.mean(x, axis=-1, keepdims=True)
    x = preprocess(x)
    x = base(x, training=False)
    if len(x.shape) == 4:
        x = {
            "avg": keras.layers.GlobalAveragePooling2D(),
            "max": keras.layers.GlobalMaxPooling2D(),
            "flatten": keras.layers.Flatten(),
        }[pooling](x)
    elif len(x.shape) != 2:
        raise TrainerError(f"backbone output has shape {x.shape}; expected [N, H, W, C] or [N, D]")
    model = keras.Model(images, x, name="backbone")
    source["pooling"] = pooling
    return Backbone(model, int(height), int(width), int(x.shape[-1]), source)


def _scale_to_unit(x: Any) -> Any:
    """A user's model gets pixels in [0, 1] (the convention of Keras' Rescaling(1/255))."""
    return x / 255.0


def _application(
    constructor: Callable[..., keras.Model], name: str, weights: str, input_size: int
) -> keras.Model:
    resolved: str | None = None if weights.lower() == "none" else weights
    try:
        return constructor(
            include_top=False, weights=resolved, input_shape=(input_size, input_size, 3)
        )
    except Exception as exc:
        if resolved != "imagenet":
            raise TrainerError(f"could not build {name}: {exc}") from exc
        url = re.search(r"https?://\S+", str(exc))
        filename = os.path.basename(url.group(0).rstrip(".:,")) if url else "<the weights file>"
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
        raise TrainerError(
            f"could not download ImageNet weights for {name} ({type(exc).__name__}: {exc}). "
            f"Offline? Put {filename} into {cache}/ (Keras' cache), or set "
            "TLSERVE_BACKBONE_WEIGHTS to a local weights file, or to `none` for random weights"
        ) from exc


def features_function(backbone: Backbone) -> tf.types.experimental.GenericFunction:
    """A tf.function uint8 images -> {"features": ...}, the graph that is exported."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, backbone.height, backbone.width, 3], tf.uint8, name="images")
        ]
    )
    def extract(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"features": backbone.model(images, training=False)}

    return extract
