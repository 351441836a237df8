"""A toy "colour" model in the exact registry format, built with onnx's helper API.

The backbone maps an image to its mean RGB; the head turns that into a softmax over
labels. Its right answers are known (a red image is "red"), which makes it useful for
the serving demo and the tests before a trained model exists. Needs the `onnx` package
(the `dev` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tlserve.server.registry import BackboneManifest, Registry

OPSET = [helper.make_opsetid("", 17)]
COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}


def colour_backbone(height: int = 32, width: int = 32, scale: float = 1.0) -> bytes:
    """uint8 [N,H,W,3] -> float [N,3]: mean colour / 255 * scale."""
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes,
        "colour_backbone",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", height, width, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(np.array(scale / 255.0, dtype=np.float32), "scale"),
        ],
    )
    return _serialize(graph)


def linear_head(weights: np.ndarray, bias: np.ndarray | None = None) -> bytes:
    """float [N,D] -> softmax(x @ W + b) [N,C]."""
    dim, classes = weights.shape
    bias = np.zeros(classes, dtype=np.float32) if bias is None else bias
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "linear_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    return _serialize(graph)


def _serialize(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def publish_backbone(registry: Registry, size: int = 32, scale: float = 1.0) -> BackboneManifest:
    return registry.publish_backbone(
        colour_backbone(size, size, scale),
        input_name="images",
        output_name="features",
        height=size,
        width=size,
        feature_dim=3,
        source={"kind": "test-colour", "scale": scale},
    )


def publish_colour_version(
    registry: Registry,
    *,
    labels: Sequence[str] = ("red", "green", "blue"),
    answer_for: dict[str, str] | None = None,
    size: int = 32,
    scale: float = 1.0,
    make_current: bool = True,
    parent: str | None = None,
    card: dict[str, Any] | None = None,
) -> str:
    """A version whose answer for each colour is `answer_for[colour]` (default: itself),
    with `card` added to its model card."""
    answer_for = answer_for or {c: c for c in COLOURS}
    backbone = publish_backbone(registry, size, scale)
    weights = np.zeros((3, len(labels)), dtype=np.float32)
    for channel, colour in enumerate(COLOURS):
        weights[channel, list(labels).index(answer_for[colour])] = 20.0 / scale
    version = registry.publish_version(
        head_onnx=linear_head(weights),
        labels=list(labels),
        backbone=backbone,
        head_input="features",
        head_output="probabilities",
        card={"metrics": {"holdout_accuracy": 1.0}, **(card or {})},
        parent=parent,
    )
    if make_current:
        registry.set_current(version)
    return version
