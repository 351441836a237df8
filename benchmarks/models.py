"""A MobileNetV2-sized backbone and a linear head, built with onnx's helper API (no TensorFlow).

The architecture is MobileNetV2 (alpha 1.0, 224x224): the same layers, channel counts,
strides and FLOPs as keras.applications.MobileNetV2 with BatchNorm folded into the
convolutions, as an exporter leaves it. Weights are random (He init, fixed seed): the
benchmarks measure speed, not accuracy. Input is uint8 NHWC, normalised in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tlserve.server.registry import Registry

# (expansion, output channels, repeats, first stride), as in the MobileNetV2 paper.
_BLOCKS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, array: np.ndarray, prefix: str) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        groups: int = 1,
        relu6: bool = True,
    ) -> str:
        fan_in = cin // groups * kernel * kernel
        weight = self.rng.normal(
            0, np.sqrt(2.0 / fan_in), (cout, cin // groups, kernel, kernel)
        ).astype(np.float32)
        bias = np.zeros(cout, dtype=np.float32)
        out = self.name("conv")
        pad = kernel // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.const(weight, "w"), self.const(bias, "b")],
                [out],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=groups,
            )
        )
        if not relu6:
            return out
        clipped = self.name("relu6")
        self.nodes.append(
            helper.make_node(
                "Clip",
                [
                    out,
                    self.const(np.array(0.0, np.float32), "lo"),
                    self.const(np.array(6.0, np.float32), "hi"),
                ],
                [clipped],
            )
        )
        return clipped

    def add(self, a: str, b: str) -> str:
        out = self.name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [out]))
        return out


def mobilenet_v2_backbone(size: int = 224, seed: int = 0) -> tuple[bytes, int]:
    """uint8 [N,size,size,3] -> float [N,1280] features. Returns (onnx bytes, feature dim)."""
    g = _Graph(seed)
    g.nodes.append(helper.make_node("Cast", ["images"], ["x_float"], to=TensorProto.FLOAT))
    scale = g.const(np.array(1 / 127.5, np.float32), "scale")
    one = g.const(np.array(1.0, np.float32), "one")
    g.nodes.append(helper.make_node("Mul", ["x_float", scale], ["x_scaled"]))
    g.nodes.append(helper.make_node("Sub", ["x_scaled", one], ["x_norm"]))
    g.nodes.append(helper.make_node("Transpose", ["x_norm"], ["x_nchw"], perm=[0, 3, 1, 2]))
    x = g.conv("x_nchw", 3, 32, 3, 2)
    channels = 32
    for expansion, out_channels, repeats, first_stride in _BLOCKS:
        for index in range(repeats):
            stride = first_stride if index == 0 else 1
            hidden = channels * expansion
            y = g.conv(x, channels, hidden, 1, 1) if expansion != 1 else x
            y = g.conv(y, hidden, hidden, 3, stride, groups=hidden)
            y = g.conv(y, hidden, out_channels, 1, 1, relu6=False)
            x = g.add(x, y) if stride == 1 and channels == out_channels else y
            channels = out_channels
    x = g.conv(x, channels, 1280, 1, 1)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    graph = helper.make_graph(
        g.nodes,
        "mobilenet_v2_backbone",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1280])],
        initializer=g.initializers,
    )
    return _finish(graph), 1280


def softmax_head(feature_dim: int, classes: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.05, (feature_dim, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "softmax_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", feature_dim])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(np.zeros(classes, np.float32), "b"),
        ],
    )
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def publish_mobilenet_models(
    root: Path, size: int, classes: int, named: Sequence[str] = ()
) -> Registry:
    """A registry at `root` with the default model and `named` ones, each a head of its own
    (seeded apart) on one MobileNetV2-sized backbone, every one served."""
    registry = Registry.local(root)
    backbone_bytes, dim = mobilenet_v2_backbone(size)
    backbone = registry.publish_backbone(
        backbone_bytes,
        input_name="images",
        output_name="features",
        height=size,
        width=size,
        feature_dim=dim,
        source={"kind": "benchmark", "architecture": "MobileNetV2 (random weights)"},
    )
    for seed, name in enumerate(["", *named]):
        if name:
            registry.add_model(name)
        scoped = registry.for_model(name or None)
        version = scoped.publish_version(
            head_onnx=softmax_head(dim, classes, seed=seed + 1),
            labels=[f"class_{i}" for i in range(classes)],
            backbone=backbone,
            head_input="features",
            head_output="probabilities",
        )
        scoped.set_current(version)
    return registry
