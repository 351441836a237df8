"""Protobuf <-> domain conversions for both gRPC services, in one place."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import grpc
import numpy as np

from tlserve.proto import classifier_pb2 as pb
from tlserve.proto import grpc_predict_v2_pb2 as kserve_pb2
from tlserve.server.api.common import experiment_document, listing_card
from tlserve.server.api.status import grpc_status_for
from tlserve.server.api.tensors import (
    PLATFORM,
    InferInput,
    RequestedOutput,
    check_declared_batch,
    dense_array,
    infer_outputs,
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
from tlserve.server.errors import InvalidInput
from tlserve.server.experiments import ExperimentReport
from tlserve.server.feedback import FeedbackInput, ItemResult
from tlserve.server.monitoring.live import LiveReport
from tlserve.server.prediction import (
    ImageInput,
    LabelScore,
    PredictResult,
    check_image_count,
)
from tlserve.server.security import Presented
from tlserve.server.store.base import StoredLabel, SuggestStrategy
from tlserve.server.training_status import TrainingStatus

_TENSOR_DTYPES = {pb.UINT8: np.dtype(np.uint8), pb.FLOAT32: np.dtype("<f4")}


# ---- tlserve.v1 ------------------------------------------------------------------


def images_from_proto(images: Sequence[pb.Image], max_images: int) -> list[ImageInput]:
    check_image_count(len(images), max_images)
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
            f"image {index}: tensor shape {shape[:8]} is not accepted; expected [height, width, 3]"
        )
    return dense_array(tensor.data, shape, dtype, f"image {index}")


def feedback_from_proto(request: pb.SubmitFeedbackRequest) -> FeedbackInput:
    subject = request.WhichOneof("subject")
    common = {
        "label": request.label,
        "idempotency_key": request.idempotency_key,
        "source": request.source,
        "model": request.model,
    }
    if subject == "prediction_id":
        return FeedbackInput(prediction_id=request.prediction_id, **common)
    if subject == "image":
        (image,) = images_from_proto([request.image], 1)
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
            item.duplicate = result.stored.duplicate
        if result.error is not None:
            item.error_code = grpc_status_for(result.error).name
            item.error = str(result.error)
    response.accepted = sum(r.accepted for r in response.results)
    response.rejected = len(response.results) - response.accepted
    return response


def labels_response(overview: LabelOverview) -> pb.ListLabelsResponse:
    labels = overview.labels
    response = pb.ListLabelsResponse(
        labels=[
            pb.LabelCount(
                label=info.label,
                samples=info.samples,
                holdout=info.holdout,
                status=info.status,
                images_needed=info.images_needed,
                labelers_needed=info.labelers_needed,
            )
            for info in labels
        ],
        total_samples=sum(info.samples for info in labels),
        conflicting_samples=overview.conflicting_samples,
    )
    if overview.added is not None:
        response.labels_added = overview.added
    return response


def retraction_response(retraction: Retraction) -> pb.RetractLabelResponse:
    return pb.RetractLabelResponse(sample_id=retraction.sample_id, retracted_label=retraction.label)


def presented(context: grpc.aio.ServicerContext) -> Presented:
    """The caller's credentials: `authorization` metadata as sent, and the names of a
    client certificate that the TLS handshake verified (gRPC reports only verified ones)."""
    authorizations = [
        value
        for key, value in context.invocation_metadata() or ()
        if key == "authorization" and isinstance(value, str)
    ]
    auth = context.auth_context()
    names = [
        name.decode("utf-8", "replace")
        for key in ("x509_common_name", "x509_subject_alternative_name")
        for name in auth.get(key, ())
    ]
    return Presented(
        authorizations[0] if authorizations else None,
        tuple(names),
        repeated_authorization=len(authorizations) > 1,
    )


SUGGEST_STRATEGIES = {
    pb.SUGGEST_STRATEGY_UNSPECIFIED: SuggestStrategy.BALANCED,
    pb.BALANCED: SuggestStrategy.BALANCED,
    pb.LEAST_CONFIDENCE: SuggestStrategy.LEAST_CONFIDENCE,
    pb.MARGIN: SuggestStrategy.MARGIN,
    pb.ENTROPY: SuggestStrategy.ENTROPY,
}


def suggest_strategy(strategy: int) -> SuggestStrategy:
    if strategy not in SUGGEST_STRATEGIES:
        raise InvalidInput(
            f"unknown strategy {strategy}; accepted BALANCED, LEAST_CONFIDENCE, MARGIN, ENTROPY"
        )
    return SUGGEST_STRATEGIES[strategy]


def _label_scores(scores: Sequence[LabelScore]) -> list[pb.LabelScore]:
    return [pb.LabelScore(label=s.label, score=s.score) for s in scores]


def suggestions_response(suggestions: Sequence[LabelSuggestion]) -> pb.SuggestLabelsResponse:
    return pb.SuggestLabelsResponse(
        suggestions=[
            pb.Suggestion(
                prediction_id=s.prediction_id,
                uncertainty=s.uncertainty,
                model_version=s.model_version,
                top=_label_scores(s.top),
                image_png=s.image_png,
            )
            for s in suggestions
        ]
    )


def predict_response(result: PredictResult) -> pb.PredictResponse:
    return pb.PredictResponse(
        model_version=result.version,
        label_count=len(result.labels),
        predictions=[
            pb.Prediction(prediction_id=p.prediction_id, top=_label_scores(p.top))
            for p in result.predictions
        ],
    )


def model_info(info: ModelInfo, *, listed: bool = False) -> pb.ModelInfo:
    """One version; `listed` (a listing of many): its card without training history."""
    manifest = info.manifest
    card = listing_card(manifest.raw) if listed else manifest.raw
    size = manifest.raw.get("input", {})
    return pb.ModelInfo(
        model=info.model,
        version=manifest.version,
        labels=list(manifest.labels),
        backbone_id=manifest.backbone_id,
        input_height=int(size.get("height", 0)),
        input_width=int(size.get("width", 0)),
        resize=str(size.get("resize", "")),
        created_at=manifest.created_at,
        parent_version=manifest.parent or "",
        serving=info.serving,
        execution_providers=list(info.providers),
        card_json=json.dumps(card, sort_keys=True),
        live_accuracy=info.live_accuracy,
        live_feedback_count=info.live_total,
        training=training_status(info.training) if info.training else None,
        monitoring=live_monitoring(info.monitoring) if info.monitoring else None,
        experiment=experiment_message(info.experiment) if info.experiment else None,
    )


def experiment_message(report: ExperimentReport) -> pb.Experiment:
    document = experiment_document(report)
    evidence = document.pop("evidence")
    return pb.Experiment(
        **document, evidence=pb.ExperimentEvidence(**evidence) if evidence else None
    )


def live_monitoring(report: LiveReport) -> pb.LiveMonitoring:
    drift = report.drift
    return pb.LiveMonitoring(
        estimated_accuracy=report.estimate.expected_accuracy,
        estimated_from=report.estimate.predictions,
        temperature=report.estimate.temperature,
        drift_state=report.drift_verdict.value,
        drift_p_value=drift.p_value if drift and drift.p_value is not None else 0.0,
        drift_statistic=drift.statistic if drift else 0.0,
        drift_window=drift.window if drift else 0,
        drift_tested_windows=drift.tested_windows if drift else 0,
        drift_alarmed_windows=drift.alarmed_windows if drift else 0,
    )


def training_status(status: TrainingStatus) -> pb.TrainingStatus:
    last = status.last_run
    return pb.TrainingStatus(
        state=status.state.value,
        detail=status.detail,
        updated_at=status.updated_at,
        stale=status.stale,
        last_run=pb.TrainingRun(
            run_id=last.run_id,
            result=last.result,
            reasons=list(last.reasons),
            version=last.version or "",
            finished_at=last.finished_at,
            labels=last.labels,
        )
        if last
        else None,
        waiting_classes=dict(status.waiting_classes),
        new_labels=status.new_labels,
        next_trigger=status.next_trigger,
    )


def list_models_response(listing: ModelListing) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(
        models=[model_info(m, listed=True) for m in listing.models]
        + [pb.ModelInfo(version=version, error=error) for version, error in listing.unreadable],
        current_version=listing.current or "",
    )


def served_models_response(models: Sequence[ServedModelState]) -> pb.ListServedModelsResponse:
    return pb.ListServedModelsResponse(
        models=[
            pb.ServedModel(name=m.name, version=m.version, is_default=m.is_default) for m in models
        ]
    )


def rollback_response(rollback: Rollback) -> pb.RollbackResponse:
    return pb.RollbackResponse(
        previous_version=rollback.previous_version, current_version=rollback.current_version
    )


# ---- KServe v2 (Open Inference Protocol) ------------------------------------------


def kserve_inputs(request: kserve_pb2.ModelInferRequest, max_images: int) -> list[InferInput]:
    """The request's tensors; each declared batch is checked before its bytes are copied
    out of the message (a refused 60 MB request costs no third copy)."""
    for tensor in request.inputs:
        check_declared_batch(tensor.name, tensor.shape, max_images)
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        if raw and tensor.HasField("contents"):
            raise InvalidInput("input has both `contents` and raw_input_contents; send one of them")
        common = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if raw:
            inputs.append(InferInput(**common, raw=raw[index]))
        elif tensor.datatype == "BYTES":
            inputs.append(InferInput(**common, elements=list(tensor.contents.bytes_contents)))
        elif tensor.datatype == "UINT8":
            values = np.asarray(tensor.contents.uint_contents, dtype=np.int64)
            inputs.append(InferInput(**common, values=values))
        else:
            values = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
            inputs.append(InferInput(**common, values=values))
    return inputs


def kserve_requested_outputs(request: kserve_pb2.ModelInferRequest) -> list[RequestedOutput]:
    return [
        RequestedOutput(o.name, _classification_count(o.name, o.parameters))
        for o in request.outputs
    ]


def _classification_count(name: str, parameters: Mapping[str, kserve_pb2.InferParameter]) -> int:
    if "classification" not in parameters:
        return 0
    parameter = parameters["classification"]
    choice = parameter.WhichOneof("parameter_choice")
    count = {"int64_param": parameter.int64_param, "uint64_param": parameter.uint64_param}.get(
        choice or "", 0
    )
    if count < 1:
        raise InvalidInput(f"output {name[:64]}: classification must be a positive integer")
    return count


def kserve_response(
    request: kserve_pb2.ModelInferRequest, result: PredictResult
) -> kserve_pb2.ModelInferResponse:
    outputs = infer_outputs(kserve_requested_outputs(request), result)
    response = kserve_pb2.ModelInferResponse(
        model_name=result.model, model_version=result.version, id=request.id
    )
    for output in outputs:
        response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        response.raw_output_contents.append(output.raw())
    return response


def kserve_metadata(signature: ServedSignature) -> kserve_pb2.ModelMetadataResponse:
    tensor = kserve_pb2.ModelMetadataResponse.TensorMetadata
    inputs, outputs = model_tensors(signature)
    return kserve_pb2.ModelMetadataResponse(
        name=signature.model,
        versions=[signature.version],
        platform=PLATFORM,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in outputs],
    )
