"""JSON and binary-data <-> domain conversions for the HTTP adapter, in one place.

The Open Inference Protocol's REST side: a JSON request, optionally followed by the
binary buffers of inputs that declare `parameters.binary_data_size` (the JSON part's
length is the `Inference-Header-Content-Length` header); outputs come back as JSON
`data`, or as binary buffers after the JSON when the request asks for binary data.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from tlserve.server.api.common import experiment_document, listing_card
from tlserve.server.api.tensors import (
    IMAGE_INPUT,
    LABEL_OUTPUT,
    PLATFORM,
    PROBABILITIES_OUTPUT,
    InferInput,
    OutputTensor,
    RequestedOutput,
    model_tensors,
)
from tlserve.server.core import (
    LabelOverview,
    LabelSuggestion,
    ModelInfo,
    ModelListing,
    Retraction,
    Rollback,
    ServedModelState,
    ServedSignature,
)
from tlserve.server.errors import InvalidInput, TooLarge, quoted
from tlserve.server.feedback import FeedbackInput
from tlserve.server.monitoring.live import LiveReport
from tlserve.server.prediction import LabelScore, PredictResult
from tlserve.server.security import Presented
from tlserve.server.security.tls import certificate_names
from tlserve.server.store.base import StoredLabel, SuggestStrategy
from tlserve.server.training_status import TrainingStatus

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str
    inputs: list[InferInput]
    outputs: list[RequestedOutput]
    binary_outputs: frozenset[str]


def _header_length(value: str, body: bytes) -> int:
    try:
        length = int(value)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} must be an integer") from None
    if not 0 <= length <= len(body):
        raise InvalidInput(f"{HEADER_LENGTH} is {length}, but the body has {len(body)} bytes")
    return length


def parse_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise InvalidInput(
            f"{what} is nested too deeply: JSON arrays and objects may nest a few hundred "
            "levels, and no request here needs more than five"
        ) from None
    except ValueError as exc:  # not JSON, not UTF-8, or an integer of thousands of digits
        raise InvalidInput(f"{what} is not valid JSON: {quoted(str(exc), 200)}") from None


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    return value


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer")
    return value


# ---- KServe v2 REST ----------------------------------------------------------------


def infer_request(body: bytes, header_length: str | None, max_json_bytes: int) -> InferRequest:
    """Split JSON from binary buffers and read the inputs and requested outputs.

    The JSON part is capped at `max_json_bytes` before parsing: millions of JSON tensor
    elements would hold the interpreter (and so the event loop) for hundreds of ms."""
    json_length = len(body) if header_length is None else _header_length(header_length, body)
    if json_length > max_json_bytes:
        raise TooLarge(
            f"the inference request's JSON part is {json_length} bytes; at most "
            f"{max_json_bytes} are accepted. Send large tensors as binary data (the "
            f"{HEADER_LENGTH} header and `binary_data_size`)"
        )
    if header_length is None:
        document, binary = parse_json(body, "the inference request"), b""
    else:
        document = parse_json(body[:json_length], "the inference request's JSON part")
        binary = body[json_length:]
    request = _object(document, "the inference request")
    parameters = _object(request.get("parameters", {}), "parameters")
    all_binary = parameters.get("binary_data_output") is True
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidInput("the inference request needs an `inputs` list")
    inputs, offset = [], 0
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _infer_input(_object(raw, f"inputs[{index}]"), binary, offset, index)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} binary bytes that no input's "
            "binary_data_size accounts for"
        )
    outputs, binary_outputs = [], set()
    raw_outputs = request.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise InvalidInput("`outputs` must be a list")
    for index, raw in enumerate(raw_outputs):
        output = _object(raw, f"outputs[{index}]")
        name = _string(output.get("name"), f"outputs[{index}].name")
        options = _object(output.get("parameters", {}), f"outputs[{index}].parameters")
        count = options.get("classification", 0)
        count = _integer(count, f"outputs[{index}].parameters.classification")
        if count < 0:
            raise InvalidInput(f"output {name[:64]}: classification must be positive")
        outputs.append(RequestedOutput(name, count))
        if options.get("binary_data", all_binary) is True:
            binary_outputs.add(name)
    if not raw_outputs and all_binary:
        binary_outputs.update((PROBABILITIES_OUTPUT, LABEL_OUTPUT))
    request_id = request.get("id", "")
    return InferRequest(_string(request_id, "id"), inputs, outputs, frozenset(binary_outputs))


def _infer_input(
    raw: Mapping[str, Any], binary: bytes, offset: int, index: int
) -> tuple[InferInput, int]:
    what = f"inputs[{index}]"
    name = _string(raw.get("name"), f"{what}.name")
    datatype = _string(raw.get("datatype"), f"{what}.datatype")
    shape = raw.get("shape")
    if not isinstance(shape, list):
        raise InvalidInput(f"{what}.shape must be a list of integers")
    dims = [_integer(d, f"{what}.shape") for d in shape]
    parameters = _object(raw.get("parameters", {}), f"{what}.parameters")
    if "binary_data_size" in parameters:
        size = _integer(parameters["binary_data_size"], f"{what}.binary_data_size")
        if size < 0 or offset + size > len(binary):
            raise InvalidInput(
                f"input {name[:64]}: binary_data_size {size} runs past the body's binary data"
            )
        if "data" in raw:
            raise InvalidInput(f"input {name[:64]} has both `data` and binary_data_size")
        return InferInput(name, datatype, dims, raw=binary[offset : offset + size]), offset + size
    data = raw.get("data")
    if data is None:
        raise InvalidInput(f"input {name[:64]} has no `data` and no binary_data_size")
    if datatype == "BYTES":
        return InferInput(name, datatype, dims, elements=_json_bytes(name, data)), offset
    return InferInput(name, datatype, dims, values=_json_numbers(name, data)), offset


def _json_bytes(name: str, data: Any) -> list[bytes]:
    """BYTES elements in JSON: base64 strings (raw image bytes cannot be JSON text)."""
    values = data if isinstance(data, list) else [data]
    flat = np.asarray(values, dtype=object).ravel().tolist()
    elements = []
    for index, value in enumerate(flat):
        if not isinstance(value, str):
            raise InvalidInput(f"input {name[:64]}: element {index} must be a base64 string")
        try:
            elements.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidInput(
                f"input {name[:64]}: element {index} is not base64; in JSON, {IMAGE_INPUT} "
                "elements are base64-encoded images (or send them as binary data)"
            ) from None
    return elements


def _json_numbers(name: str, data: Any) -> np.ndarray:
    # numpy would read "7" as 7 and true as 1: only JSON numbers are numbers here.
    flat = np.asarray(data if isinstance(data, list) else [data], dtype=object).ravel()
    if not all(type(value) in (int, float) for value in flat.tolist()):
        raise InvalidInput(f"input {name[:64]}: every `data` element must be a JSON number")
    try:
        return np.asarray(data, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InvalidInput(
            f"input {name[:64]}: `data` must be a (nested) list of numbers"
        ) from None


def infer_response(
    request: InferRequest, result: PredictResult, outputs: Sequence[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when binary buffers follow it."""
    document: dict[str, Any] = {
        "model_name": result.model,
        "model_version": result.version,
        "outputs": [],
    }
    if request.id:
        document["id"] = request.id
    buffers = []
    for output in outputs:
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if output.name in request.binary_outputs:
            raw = output.raw()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        elif output.elements is not None:
            tensor["data"] = [e.decode("utf-8", "replace") for e in output.elements]
        else:
            assert output.array is not None
            tensor["data"] = output.array.ravel().tolist()
        document["outputs"].append(tensor)
    header = json.dumps(document).encode()
    if not buffers:
        return header, None
    return header + b"".join(buffers), len(header)


def repository_index(models: Sequence[ServedModelState]) -> list[dict[str, Any]]:
    """Triton's model repository index: every model with its version and state."""
    return [
        {
            "name": m.name,
            "version": m.version,
            "state": "READY" if m.version else "UNAVAILABLE",
            **({} if m.version else {"reason": "no version is served yet"}),
        }
        for m in models
    ]


def served_models_response(models: Sequence[ServedModelState]) -> dict[str, Any]:
    return {
        "models": [
            {"name": m.name, "version": m.version, "is_default": m.is_default} for m in models
        ]
    }


def model_metadata(signature: ServedSignature) -> dict[str, Any]:
    inputs, outputs = model_tensors(signature)
    return {
        "name": signature.model,
        "versions": [signature.version],
        "platform": PLATFORM,
        "inputs": [dataclasses.asdict(t) for t in inputs],
        "outputs": [dataclasses.asdict(t) for t in outputs],
    }


# ---- tlserve's own calls ---------------------------------------------------------------


def _scores(scores: Sequence[LabelScore]) -> list[dict[str, Any]]:
    return [{"label": s.label, "score": s.score} for s in scores]


def predict_response(result: PredictResult) -> dict[str, Any]:
    return {
        "model_version": result.version,
        "label_count": len(result.labels),
        "predictions": [
            {"prediction_id": p.prediction_id, "top": _scores(p.top)} for p in result.predictions
        ],
    }


def feedback_from_json(document: Any, model: str = "") -> FeedbackInput:
    """`{"label", "prediction_id" | "image_base64", "idempotency_key"?, "source"?}`, for
    `model` (the route's; '' is the default model)."""
    body = _object(document, "the feedback")
    label = _string(body.get("label", ""), "label")
    common = {
        "label": label,
        "idempotency_key": _string(body.get("idempotency_key", ""), "idempotency_key"),
        "source": _string(body.get("source", ""), "source"),
        "model": model,
    }
    prediction_id = _string(body.get("prediction_id", ""), "prediction_id")
    image = _string(body.get("image_base64", ""), "image_base64")
    if bool(prediction_id) == bool(image):
        raise InvalidInput("feedback names exactly one of prediction_id and image_base64")
    if prediction_id:
        return FeedbackInput(prediction_id=prediction_id, **common)
    try:
        encoded = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image_base64 is not valid base64") from None
    return FeedbackInput(encoded=encoded, **common)


def feedback_response(stored: StoredLabel) -> dict[str, Any]:
    return {
        "sample_id": stored.sample_id,
        "label": stored.label,
        "duplicate": stored.duplicate,
        "previous_label": stored.previous_label or "",
    }


def labels_response(overview: LabelOverview) -> dict[str, Any]:
    labels = overview.labels
    document: dict[str, Any] = {
        "labels": [
            {
                "label": info.label,
                "samples": info.samples,
                "holdout": info.holdout,
                "status": str(info.status),
                "images_needed": info.images_needed,
                "labelers_needed": info.labelers_needed,
            }
            for info in labels
        ],
        "total_samples": sum(info.samples for info in labels),
        "conflicting_samples": overview.conflicting_samples,
    }
    if overview.added is not None:
        document["labels_added"] = overview.added
    return document


def retraction_response(retraction: Retraction) -> dict[str, Any]:
    return {"sample_id": retraction.sample_id, "retracted_label": retraction.label}


def approve_labels_request(document: Any) -> list[str]:
    labels = document.get("labels") if isinstance(document, dict) else None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise InvalidInput('the request body must be {"labels": ["<label>", ...]}')
    return labels


def presented(request: web.Request) -> Presented:
    """The caller's credentials: the Authorization header as sent, and the names of a
    client certificate that the TLS handshake verified."""
    transport = request.transport
    peer = transport.get_extra_info("peercert") if transport is not None else None
    sent = request.headers.getall("Authorization", [])
    return Presented(
        sent[0] if sent else None, certificate_names(peer), repeated_authorization=len(sent) > 1
    )


def suggest_strategy(value: str) -> SuggestStrategy:
    try:
        return SuggestStrategy(value or SuggestStrategy.BALANCED)
    except ValueError:
        raise InvalidInput(
            f"unknown strategy {quoted(value)}; accepted {', '.join(SuggestStrategy)}"
        ) from None


def suggestions_response(suggestions: Sequence[LabelSuggestion]) -> dict[str, Any]:
    return {
        "suggestions": [
            {
                "prediction_id": s.prediction_id,
                "uncertainty": s.uncertainty,
                "model_version": s.model_version,
                "top": _scores(s.top),
                "image_png_base64": base64.b64encode(s.image_png).decode() if s.image_png else "",
            }
            for s in suggestions
        ]
    }


def model_info(info: ModelInfo, *, listed: bool = False) -> dict[str, Any]:
    """One version; `listed` (a listing of many): its card without training history."""
    manifest = info.manifest
    return {
        "model": info.model,
        "version": manifest.version,
        "labels": list(manifest.labels),
        "backbone_id": manifest.backbone_id,
        "input": manifest.raw.get("input", {}),
        "created_at": manifest.created_at,
        "parent_version": manifest.parent or "",
        "serving": info.serving,
        "execution_providers": list(info.providers),
        "live_accuracy": info.live_accuracy,
        "live_feedback_count": info.live_total,
        "card": listing_card(manifest.raw) if listed else dict(manifest.raw),
        "training": training_status(info.training) if info.training else None,
        "monitoring": live_monitoring(info.monitoring) if info.monitoring else None,
        "experiment": experiment_document(info.experiment) if info.experiment else None,
    }


def start_experiment_request(body: bytes) -> dict[str, Any]:
    """StartExperiment's JSON body: challenger_version, rollout, share, and optionally
    max_labels and max_hours."""
    document = _object(parse_json(body, "the request body"), "the request body")
    known = {"challenger_version", "rollout", "share", "max_labels", "max_hours"}
    unknown = sorted(set(document) - known)
    if unknown:
        raise InvalidInput(f"unknown fields {unknown}; accepted: {sorted(known)}")
    share = document.get("share")
    if isinstance(share, bool) or not isinstance(share, int | float):
        raise InvalidInput("`share` must be a number in (0, 1]")
    max_hours = document.get("max_hours", 0)
    if isinstance(max_hours, bool) or not isinstance(max_hours, int | float):
        raise InvalidInput("`max_hours` must be a number")
    return {
        "challenger": _string(document.get("challenger_version", ""), "`challenger_version`"),
        "rollout": _string(document.get("rollout", ""), "`rollout`"),
        "share": float(share),
        "max_labels": _integer(document.get("max_labels", 0), "`max_labels`"),
        "max_hours": float(max_hours),
    }


def live_monitoring(report: LiveReport) -> dict[str, Any]:
    drift = report.drift
    return {
        "estimated_accuracy": report.estimate.expected_accuracy,
        "estimated_from": report.estimate.predictions,
        "temperature": report.estimate.temperature,
        "drift_state": report.drift_verdict.value,
        "drift_p_value": drift.p_value if drift else None,
        "drift_statistic": drift.statistic if drift else None,
        "drift_window": drift.window if drift else None,
        "drift_tested_windows": drift.tested_windows if drift else 0,
        "drift_alarmed_windows": drift.alarmed_windows if drift else 0,
    }


def training_status(status: TrainingStatus) -> dict[str, Any]:
    return {
        "state": status.state.value,
        "detail": status.detail,
        "updated_at": status.updated_at,
        "stale": status.stale,
        "last_run": status.last_run.to_json() if status.last_run else None,
        "waiting_classes": dict(status.waiting_classes),
        "new_labels": status.new_labels,
        "next_trigger": status.next_trigger,
    }


def list_models_response(listing: ModelListing) -> dict[str, Any]:
    return {
        "models": [model_info(m, listed=True) for m in listing.models]
        + [{"version": version, "error": error} for version, error in listing.unreadable],
        "current_version": listing.current or "",
    }


def rollback_response(rollback: Rollback) -> dict[str, Any]:
    return {
        "previous_version": rollback.previous_version,
        "current_version": rollback.current_version,
    }


def approved_labels_response(labels: Sequence[str]) -> dict[str, Any]:
    return {"labels": list(labels)}


def training_request_response(request_id: int) -> dict[str, Any]:
    return {"request_id": request_id}
