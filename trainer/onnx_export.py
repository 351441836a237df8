"""Keras -> ONNX with checks: exactly one input, constants folded, parity with Keras.

tf2onnx leaves a tf.function's captured eager constants (e.g. the mean and variance of
EfficientNet's Normalization layer under Keras 3) as extra graph inputs. Such a model
would need inputs no client sends, so they are detected, turned back into initializers
from the captured values, and anything still extra fails the export.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
from onnx import compose, numpy_helper

from tlserve.trainer.errors import ExportError

OPSET = 17


def export_function(
    function: Any, *, input_name: str, output_name: str, sample: np.ndarray, atol: float = 1e-4
) -> bytes:
    """ONNX bytes of a one-input tf.function returning {output_name: tensor}, parity-checked."""
    model, _ = tf2onnx.convert.from_function(
        function, input_signature=function.input_signature, opset=OPSET
    )
    _fold_captured_constants(model, function, input_name)
    _canonical_names(model)
    inputs = [i.name for i in model.graph.input]
    if inputs != [input_name]:
        raise ExportError(f"exported graph has inputs {inputs}; expected exactly [{input_name!r}]")
    outputs = [o.name for o in model.graph.output]
    if outputs != [output_name]:
        raise ExportError(f"exported graph has outputs {outputs}; expected [{output_name!r}]")
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    check_parity(data, function, sample, input_name, output_name, atol)
    return data


def _canonical_names(model: onnx.ModelProto) -> None:
    """Names by position instead of tf2onnx's process-wide counters (`new_shape__128`,
    `unk__130`), so that exporting the same model twice, in one process or on two
    machines, gives the same bytes, and so the same backbone id: models trained apart on
    one backbone then share it in the registry and in the server's memory."""
    graph = model.graph
    graph.doc_string = ""  # tf2onnx's "converted from <numbered function name>"
    kept = {value.name for value in (*graph.input, *graph.output)}
    tensors: dict[str, str] = {}
    dims: dict[str, str] = {}

    def tensor(name: str) -> str:
        if not name or name in kept:
            return name
        return tensors.setdefault(name, f"t{len(tensors)}")

    for index, node in enumerate(graph.node):
        node.name = f"n{index}"
        node.input[:] = [tensor(name) for name in node.input]
        node.output[:] = [tensor(name) for name in node.output]
    for initializer in graph.initializer:
        initializer.name = tensor(initializer.name)
    ordered = sorted(graph.initializer, key=lambda initializer: initializer.name)
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = tensor(value.name)
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = dims.setdefault(dim.dim_param, f"d{len(dims)}")


def _fold_captured_constants(model: onnx.ModelProto, function: Any, input_name: str) -> None:
    extra = {i.name for i in model.graph.input if i.name != input_name}
    if not extra:
        return
    concrete = function.get_concrete_function()
    for external, internal in concrete.graph.captures:
        if internal.name in extra and external.dtype != tf.resource:
            value = np.asarray(external.numpy())
            model.graph.initializer.append(numpy_helper.from_array(value, internal.name))
            extra.discard(internal.name)
    kept = [i for i in model.graph.input if i.name == input_name or i.name in extra]
    del model.graph.input[:]
    model.graph.input.extend(kept)


def check_parity(
    data: bytes, function: Any, sample: np.ndarray, input_name: str, output_name: str, atol: float
) -> float:
    """Largest absolute difference between ONNX Runtime and TensorFlow on `sample`."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run([output_name], {input_name: sample})
    keras_out = function(tf.constant(sample))[output_name].numpy()
    difference = float(np.max(np.abs(onnx_out - keras_out))) if keras_out.size else 0.0
    scale = max(1.0, float(np.max(np.abs(keras_out)))) if keras_out.size else 1.0
    if not difference <= atol * scale:
        raise ExportError(
            f"ONNX output differs from Keras by {difference:.3g} (allowed {atol * scale:.3g})"
        )
    return difference


def fuse(backbone: bytes, head: bytes, *, features: str) -> bytes:
    """One standalone ONNX (images -> probabilities) for serving systems other than tlserve.

    Input and output names stay those of the backbone and head; everything inside is
    prefixed so the two graphs cannot collide.
    """
    first = onnx.load_from_string(backbone)
    second = onnx.load_from_string(head)
    opset = max(_opset(first), _opset(second))
    first, second = (
        onnx.version_converter.convert_version(m, opset) if _opset(m) < opset else m
        for m in (first, second)
    )
    first.ir_version = second.ir_version = min(first.ir_version, second.ir_version)
    keep_io = {"rename_inputs": False, "rename_outputs": False}
    fused = compose.merge_models(
        compose.add_prefix(first, "backbone/", **keep_io),
        compose.add_prefix(second, "head/", **keep_io),
        io_map=[(features, features)],
    )
    onnx.checker.check_model(fused)
    return fused.SerializeToString()


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
