"""The Open Inference Protocol's tensors for tlserve's model, whatever carries them.

gRPC (raw_input_contents or typed contents) and HTTP (JSON data or the binary-data
extension) both arrive here as an `InferInput` and leave as `OutputTensor`s, so the
two transports accept and refuse exactly the same requests.

The model takes one input: `IMAGE` (BYTES, encoded images, shape [batch] or
[batch, 1]) or `PIXELS` (UINT8 or FP32, [batch, height, width, 3]). It answers
`PROBABILITIES` (FP32 [batch, labels]) and `LABEL` (BYTES [batch]); a requested output
with a `classification` count answers Triton's "score:index:label" strings instead.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tlserve.server.core import ServedSignature
from tlserve.server.errors import InvalidInput, quoted
from tlserve.server.prediction import ImageInput, PredictResult, check_image_count, top_indices

IMAGE_INPUT = "IMAGE"
PIXELS_INPUT = "PIXELS"
PROBABILITIES_OUTPUT = "PROBABILITIES"
LABEL_OUTPUT = "LABEL"
OUTPUTS = (PROBABILITIES_OUTPUT, LABEL_OUTPUT)
PIXEL_DTYPES = {"UINT8": np.dtype(np.uint8), "FP32": np.dtype("<f4")}
PLATFORM = "onnxruntime_onnx"
SERVER_NAME = "tlserve"
EXTENSIONS = ("classification",)


@dataclass(frozen=True, slots=True)
class InferInput:
    """One input tensor as sent: its bytes (`raw`, row-major little-endian; BYTES elements
    length-prefixed), or its BYTES `elements`, or its numeric `values`."""

    name: str
    datatype: str
    shape: Sequence[int]
    raw: bytes | None = None
    elements: Sequence[bytes] | None = None
    values: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor as model metadata describes it (-1: any batch size)."""

    name: str
    datatype: str
    shape: list[int]


def model_tensors(signature: ServedSignature) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The served version's inputs and outputs, for ModelMetadata on every transport."""
    inputs = [
        TensorSpec(IMAGE_INPUT, "BYTES", [-1]),
        TensorSpec(PIXELS_INPUT, "UINT8", [-1, signature.height, signature.width, 3]),
    ]
    outputs = [
        TensorSpec(PROBABILITIES_OUTPUT, "FP32", [-1, len(signature.labels)]),
        TensorSpec(LABEL_OUTPUT, "BYTES", [-1]),
    ]
    return inputs, outputs


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    classification: int = 0  # Triton's classification extension: top-N strings


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """An output: numeric `array` (FP32) or BYTES `elements`."""

    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray | None = None
    elements: list[bytes] | None = None

    def raw(self) -> bytes:
        """Row-major little-endian bytes, BYTES elements length-prefixed (KServe's raw form)."""
        if self.elements is not None:
            return encode_bytes_elements(self.elements)
        assert self.array is not None
        return np.ascontiguousarray(self.array, dtype="<f4").tobytes()


# Beyond any image's batch, height or width; small enough to print and multiply.
MAX_DIMENSION = 2**31 - 1


def check_dimensions(shape: Sequence[int], what: str) -> None:
    """Before any message prints a shape or its product: a JSON shape may hold an integer
    of thousands of digits, which Python will not even format."""
    if any(d > MAX_DIMENSION for d in shape):
        raise InvalidInput(f"{what}: a shape dimension is beyond {MAX_DIMENSION}")


def images_from_input(inputs: Sequence[InferInput], max_images: int) -> list[ImageInput]:
    """The one input tensor of a ModelInfer request, as images; the batch size its shape
    declares is checked against `max_images` before any element is read."""
    if len(inputs) != 1:
        names = [t.name[:64] for t in inputs[:8]]
        raise InvalidInput(
            f"ModelInfer takes exactly one input ({IMAGE_INPUT} as BYTES or {PIXELS_INPUT} as "
            f"UINT8/FP32), got {len(inputs)}: {names}"
        )
    (tensor,) = inputs
    shape = [int(d) for d in tensor.shape]
    check_dimensions(shape, f"input {tensor.name[:64]}")
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {tensor.name[:64]}: shape {shape[:8]} has a negative dimension")
    if tensor.name == IMAGE_INPUT:
        return _encoded_images(tensor, shape, max_images)
    if tensor.name == PIXELS_INPUT:
        return _pixel_images(tensor, shape, max_images)
    raise InvalidInput(
        f"unknown input {quoted(tensor.name)}; this model takes {IMAGE_INPUT} (BYTES: encoded "
        f"JPEG/PNG/WebP/BMP) or {PIXELS_INPUT} (UINT8 or FP32 [batch, height, width, 3])"
    )


def check_declared_batch(name: str, shape: Sequence[int], max_images: int) -> None:
    """An input's batch (its first dimension, when its rank is one this model takes) is no
    more than `max_images`; anything else is refused later with its own reason."""
    ranks = {IMAGE_INPUT: (1, 2), PIXELS_INPUT: (4,)}.get(name, ())
    if len(shape) in ranks and shape[0] > max_images:
        check_image_count(int(shape[0]), max_images)


def _encoded_images(tensor: InferInput, shape: list[int], max_images: int) -> list[ImageInput]:
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {IMAGE_INPUT} must be BYTES, got {tensor.datatype[:16]}")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInput(
            f"input {IMAGE_INPUT} shape {shape[:8]} is not accepted; expected [batch] or [batch, 1]"
        )
    check_image_count(shape[0], max_images)
    if tensor.raw is not None:
        elements = decode_bytes_elements(tensor.raw, shape[0])
    elif tensor.elements is not None:
        elements = list(tensor.elements)
    else:
        raise InvalidInput(f"input {IMAGE_INPUT} carries no data")
    if len(elements) != shape[0]:
        raise InvalidInput(
            f"input {IMAGE_INPUT}: shape {shape} but {len(elements)} elements were sent"
        )
    return [ImageInput(encoded=element) for element in elements]


def _pixel_images(tensor: InferInput, shape: list[int], max_images: int) -> list[ImageInput]:
    dtype = PIXEL_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(
            f"input {PIXELS_INPUT} datatype {tensor.datatype[:16]} is not accepted; "
            "use UINT8 or FP32"
        )
    if len(shape) != 4 or shape[3] != 3:
        raise InvalidInput(
            f"input {PIXELS_INPUT} shape {shape[:8]} is not accepted; "
            "expected [batch, height, width, 3]"
        )
    check_image_count(shape[0], max_images)
    if tensor.raw is not None:
        batch = dense_array(tensor.raw, shape, dtype, f"input {PIXELS_INPUT}")
    elif tensor.values is not None:
        batch = _array_from_values(tensor.values, shape, dtype)
    else:
        raise InvalidInput(f"input {PIXELS_INPUT} carries no data")
    return [ImageInput(pixels=image) for image in batch]


def _array_from_values(values: np.ndarray, shape: list[int], dtype: np.dtype) -> np.ndarray:
    count = math.prod(shape)
    if values.size != count:
        raise InvalidInput(
            f"input {PIXELS_INPUT}: shape {shape} needs {count} values, {values.size} were sent"
        )
    if dtype == np.uint8:
        if values.size and (
            values.min() < 0 or values.max() > 255 or (values != np.round(values)).any()
        ):
            raise InvalidInput(f"input {PIXELS_INPUT}: UINT8 values must be integers in 0..255")
        return values.astype(np.uint8).reshape(shape)
    return values.astype("<f4").reshape(shape)


def dense_array(data: bytes, shape: Sequence[int], dtype: np.dtype, what: str) -> np.ndarray:
    """Row-major tensor bytes as an array, after checking their length against the shape.

    The element count is a Python int, so a shape such as [2**32, 2**32, 3] cannot wrap
    around to match a short buffer."""
    check_dimensions(shape, what)
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise InvalidInput(
            f"{what}: tensor data has {len(data)} bytes; "
            f"shape {list(shape)[:8]} of {dtype.name} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def decode_bytes_elements(raw: bytes, expected: int) -> list[bytes]:
    """KServe's raw BYTES layout: each element is a 4-byte little-endian length + data.
    Reading stops past `expected` elements, so a buffer of millions of tiny elements
    costs no more than the shape allows."""
    elements, offset = [], 0
    while offset < len(raw):
        if len(elements) == expected:
            raise InvalidInput(
                f"raw BYTES input holds more than the {expected} elements its shape declares"
            )
        if offset + 4 > len(raw):
            raise InvalidInput("raw BYTES input is truncated inside an element length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(
                f"raw BYTES input: element of {length} bytes runs past the end of the buffer"
            )
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def encode_bytes_elements(elements: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def infer_outputs(
    requested: Sequence[RequestedOutput], result: PredictResult
) -> list[OutputTensor]:
    """The requested outputs (all of them when none is named) for a prediction."""
    wanted = list(requested) or [RequestedOutput(name) for name in OUTPUTS]
    unknown = sorted({o.name[:64] for o in wanted} - set(OUTPUTS))
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown[:8]}; this model has {', '.join(OUTPUTS)}")
    probabilities = np.stack([p.probabilities for p in result.predictions]).astype("<f4")
    batch, label_count = probabilities.shape
    outputs = []
    for output in wanted:
        if output.classification:
            if not 1 <= output.classification <= label_count:
                raise InvalidInput(
                    f"output {output.name}: classification count {output.classification} is "
                    f"out of range; accepted 1..{label_count}"
                )
            rows = [
                f"{row[i]:f}:{i}:{result.labels[i]}".encode()
                for row in probabilities
                for i in top_indices(row, output.classification)
            ]
            outputs.append(
                OutputTensor(output.name, "BYTES", [batch, output.classification], elements=rows)
            )
        elif output.name == PROBABILITIES_OUTPUT:
            outputs.append(
                OutputTensor(output.name, "FP32", [batch, label_count], array=probabilities)
            )
        else:
            labels = [p.top[0].label.encode() for p in result.predictions]
            outputs.append(OutputTensor(output.name, "BYTES", [batch], elements=labels))
    return outputs
