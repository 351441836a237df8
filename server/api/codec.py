"""Protobuf <-> domain conversions for both APIs, in one place."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence

import numpy as np

from tlserve.proto import classifier_pb2 as pb
from tlserve.proto import grpc_predict_v2_pb2 as kserve_pb2
from tlserve.server.api.status import status_for
from tlserve.server.core import ImageInput, PredictResult
from tlserve.server.errors import InvalidInput
from tlserve.server.feedback import FeedbackInput, ItemResult, Suggestion
from tlserve.server.registry import ModelManifest
from tlserve.server.store.base import StoredLabel

_TENSOR_DTYPES = {pb.UINT8: np.dtype(np.uint8), pb.FLOAT32: np.dtype("<f4")}

# KServe v2 tensor names of tlserve's model.
KSERVE_IMAGE_INPUT = "IMAGE"
KSERVE_PIXELS_INPUT = "PIXELS"
KSERVE_PROBABILITIES_OUTPUT = "PROBABILITIES"
KSERVE_LABEL_OUTPUT = "LABEL"
KSERVE_PIXEL_DTYPES = {"UINT8": np.dtype(np.uint8), "FP32": np.dtype("<f4")}


# ---- tlserve.v1 ------------------------------------------------------------------


def images_from_proto(images: Sequence[pb.Image]) -> list[ImageInput]:
    converted = []
    for index, image in enumerate(images):
        source = image.WhichOneof("source")
        if source == "encoded":
            converted.append(ImageInput(encoded=image.encoded))
        elif source == "tensor":
            converted.append(ImageInput(pixels=_tensor_from_proto(image.tensor, index)))
        else:
            raise InvalidInput(f"image {index} is empty: set either `encoded` or `tensor`")
    return converted


def _tensor_from_proto(tensor: pb.Tensor, index: int) -> np.ndarray:
    dtype = _TENSOR_DTYPES.get(tensor.dtype)
    if dtype is None:
        known = tensor.dtype in pb.DataType.values()
        name = pb.DataType.Name(tensor.dtype) if known else str(tensor.dtype)
        raise InvalidInput(
            f"image {index}: tensor dtype {name} is not accepted; use UINT8 or FLOAT32"
        )
    shape = list(tensor.shape)
    if len(shape) != 3 or shape[2] != 3 or any(d < 0 for d in shape):
        raise InvalidInput(
            f"image {index}: tensor shape {shape} is not accepted; expected [height, width, 3]"
        )
    return _dense(tensor.data, shape, dtype, f"image {index}")


def _dense(data: bytes, shape: list[int], dtype: np.dtype, what: str) -> np.ndarray:
    """Row-major tensor bytes as an array, after checking their length against the shape."""
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise InvalidInput(
            f"{what}: tensor data has {len(data)} bytes; "
            f"shape {shape} of {dtype.name} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def feedback_from_proto(request: pb.SubmitFeedbackRequest) -> FeedbackInput:
    subject = request.WhichOneof("subject")
    common = {
        "label": request.label,
        "idempotency_key": request.idempotency_key,
        "source": request.source,
    }
    if subject == "prediction_id":
        return FeedbackInput(prediction_id=request.prediction_id, **common)
    if subject == "image":
        (image,) = images_from_proto([request.image])
        return FeedbackInput(encoded=image.encoded, pixels=image.pixels, **common)
    raise InvalidInput("feedback names no image: set prediction_id or image")


def feedback_response(stored: StoredLabel) -> pb.SubmitFeedbackResponse:
    return pb.SubmitFeedbackResponse(
        sample_id=stored.sample_id,
        label=stored.label,
        duplicate=stored.duplicate,
        previous_label=stored.previous_label or "",
    )


def stream_feedback_response(results: Sequence[ItemResult]) -> pb.StreamFeedbackResponse:
    response = pb.StreamFeedbackResponse()
    for result in results:
        item = response.results.add(index=result.index, accepted=result.error is None)
        if result.stored is not None:
            item.sample_id = result.stored.sample_id
        if result.error is not None:
            item.error_code = status_for(result.error).name
            item.error = str(result.error)
    response.accepted = sum(r.accepted for r in response.results)
    response.rejected = len(response.results) - response.accepted
    return response


def labels_response(counts: Mapping[str, tuple[int, int]]) -> pb.ListLabelsResponse:
    return pb.ListLabelsResponse(
        labels=[
            pb.LabelCount(label=label, samples=samples, holdout=holdout)
            for label, (samples, holdout) in counts.items()
        ],
        total_samples=sum(samples for samples, _ in counts.values()),
    )


SUGGEST_STRATEGIES = {
    pb.SUGGEST_STRATEGY_UNSPECIFIED: "entropy",
    pb.LEAST_CONFIDENCE: "least_confidence",
    pb.MARGIN: "margin",
    pb.ENTROPY: "entropy",
}


def suggest_strategy(strategy: int) -> str:
    if strategy not in SUGGEST_STRATEGIES:
        raise InvalidInput(
            f"unknown strategy {strategy}; accepted LEAST_CONFIDENCE, MARGIN, ENTROPY"
        )
    return SUGGEST_STRATEGIES[strategy]


def suggestion(item: Suggestion, png: bytes) -> pb.Suggestion:
    prediction = item.prediction
    order = np.argsort(-prediction.probabilities, kind="stable")[:5]
    return pb.Suggestion(
        prediction_id=prediction.prediction_id,
        uncertainty=item.uncertainty,
        model_version=prediction.model_version,
        top=[
            pb.LabelScore(label=prediction.labels[i], score=float(prediction.probabilities[i]))
            for i in order
        ],
        image_png=png,
    )


def predict_response(result: PredictResult) -> pb.PredictResponse:
    return pb.PredictResponse(
        model_version=result.version,
        predictions=[
            pb.Prediction(
                prediction_id=p.prediction_id,
                top=[pb.LabelScore(label=s.label, score=s.score) for s in p.top],
            )
            for p in result.predictions
        ],
    )


def model_info(
    manifest: ModelManifest,
    *,
    serving: bool,
    providers: Sequence[str] = (),
    live: tuple[int, int] = (0, 0),
) -> pb.ModelInfo:
    size = manifest.raw.get("input", {})
    return pb.ModelInfo(
        version=manifest.version,
        labels=list(manifest.labels),
        backbone_id=manifest.backbone_id,
        input_height=int(size.get("height", 0)),
        input_width=int(size.get("width", 0)),
        resize=str(size.get("resize", "")),
        created_at=manifest.created_at,
        parent_version=manifest.parent or "",
        serving=serving,
        execution_providers=list(providers),
        card_json=json.dumps(manifest.raw, sort_keys=True),
        live_accuracy=live[0] / live[1] if live[1] else 0.0,
        live_feedback_count=live[1],
    )


# ---- KServe v2 (Open Inference Protocol) ------------------------------------------


def kserve_images(request: kserve_pb2.ModelInferRequest) -> list[ImageInput]:
    """The one input tensor of a ModelInfer request, as images."""
    if len(request.inputs) != 1:
        names = [t.name for t in request.inputs]
        raise InvalidInput(
            f"ModelInfer takes exactly one input ({KSERVE_IMAGE_INPUT} as BYTES or "
            f"{KSERVE_PIXELS_INPUT} as UINT8/FP32), got {len(names)}: {names}"
        )
    tensor = request.inputs[0]
    raw = list(request.raw_input_contents)
    if raw and len(raw) != 1:
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for 1 input")
    if raw and tensor.HasField("contents"):
        raise InvalidInput("input has both `contents` and raw_input_contents; send one of them")
    shape = list(tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input {tensor.name}: shape {shape} has a negative dimension")
    if tensor.name == KSERVE_IMAGE_INPUT:
        if tensor.datatype != "BYTES":
            raise InvalidInput(f"input {KSERVE_IMAGE_INPUT} must be BYTES, got {tensor.datatype}")
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInput(
                f"input {KSERVE_IMAGE_INPUT} shape {shape} is not accepted; "
                "expected [batch] or [batch, 1]"
            )
        elements = _bytes_elements(raw[0]) if raw else list(tensor.contents.bytes_contents)
        if len(elements) != shape[0]:
            raise InvalidInput(
                f"input {KSERVE_IMAGE_INPUT}: shape {shape} but {len(elements)} elements were sent"
            )
        return [ImageInput(encoded=element) for element in elements]
    if tensor.name == KSERVE_PIXELS_INPUT:
        dtype = KSERVE_PIXEL_DTYPES.get(tensor.datatype)
        if dtype is None:
            raise InvalidInput(
                f"input {KSERVE_PIXELS_INPUT} datatype {tensor.datatype} is not accepted; "
                "use UINT8 or FP32"
            )
        if len(shape) != 4 or shape[3] != 3:
            raise InvalidInput(
                f"input {KSERVE_PIXELS_INPUT} shape {shape} is not accepted; "
                "expected [batch, height, width, 3]"
            )
        data = raw[0] if raw else _contents_bytes(tensor.contents, tensor.datatype)
        batch = _dense(data, shape, dtype, f"input {KSERVE_PIXELS_INPUT}")
        return [ImageInput(pixels=image) for image in batch]
    raise InvalidInput(
        f"unknown input {tensor.name!r}; this model takes {KSERVE_IMAGE_INPUT} (BYTES: encoded "
        f"JPEG/PNG/WebP/BMP) or {KSERVE_PIXELS_INPUT} (UINT8 or FP32 [batch, height, width, 3])"
    )


def _bytes_elements(raw: bytes) -> list[bytes]:
    """Decode KServe's raw BYTES layout: each element is a 4-byte little-endian length + data."""
    elements, offset = [], 0
    while offset < len(raw):
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


def _contents_bytes(contents: kserve_pb2.InferTensorContents, datatype: str) -> bytes:
    if datatype == "UINT8":
        values = np.asarray(contents.uint_contents, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise InvalidInput("UINT8 contents hold values outside 0..255")
        return values.astype(np.uint8).tobytes()
    return np.asarray(contents.fp32_contents, dtype="<f4").tobytes()


def encode_bytes_tensor(elements: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def kserve_response(
    request: kserve_pb2.ModelInferRequest, model_name: str, result: PredictResult
) -> kserve_pb2.ModelInferResponse:
    requested = {o.name: o for o in request.outputs} or {
        KSERVE_PROBABILITIES_OUTPUT: None,
        KSERVE_LABEL_OUTPUT: None,
    }
    unknown = sorted(set(requested) - {KSERVE_PROBABILITIES_OUTPUT, KSERVE_LABEL_OUTPUT})
    if unknown:
        raise InvalidInput(
            f"unknown outputs {unknown}; this model has "
            f"{KSERVE_PROBABILITIES_OUTPUT} and {KSERVE_LABEL_OUTPUT}"
        )
    response = kserve_pb2.ModelInferResponse(
        model_name=model_name, model_version=result.version, id=request.id
    )
    probabilities = np.stack([p.probabilities for p in result.predictions]).astype("<f4")
    for name, spec in requested.items():
        class_count = _classification_count(spec, len(result.labels))
        tensor = response.outputs.add(name=name)
        if class_count:
            # Triton's classification extension: "score:index:label" strings, best first.
            tensor.datatype = "BYTES"
            tensor.shape.extend([len(result.predictions), class_count])
            rows = []
            for row in probabilities:
                for index in np.argsort(-row, kind="stable")[:class_count]:
                    rows.append(f"{row[index]:f}:{index}:{result.labels[index]}".encode())
            response.raw_output_contents.append(encode_bytes_tensor(rows))
        elif name == KSERVE_PROBABILITIES_OUTPUT:
            tensor.datatype = "FP32"
            tensor.shape.extend(probabilities.shape)
            response.raw_output_contents.append(probabilities.tobytes())
        else:
            tensor.datatype = "BYTES"
            tensor.shape.append(len(result.predictions))
            labels = [p.top[0].label.encode() for p in result.predictions]
            response.raw_output_contents.append(encode_bytes_tensor(labels))
    return response


def _classification_count(
    spec: kserve_pb2.ModelInferRequest.InferRequestedOutputTensor | None, label_count: int
) -> int:
    if spec is None or "classification" not in spec.parameters:
        return 0
    parameter = spec.parameters["classification"]
    choice = parameter.WhichOneof("parameter_choice")
    count = {"int64_param": parameter.int64_param, "uint64_param": parameter.uint64_param}.get(
        choice or "", -1
    )
    if not 1 <= count <= label_count:
        raise InvalidInput(
            f"output {spec.name}: classification count {count} is out of range; "
            f"accepted 1..{label_count}"
        )
    return count
