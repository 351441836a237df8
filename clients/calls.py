"""Every call of the tlserve.v1 client, written once: the RPC, the request built from
domain objects, and how the answer is read back.

`TlserveClient` (blocking) and `AsyncTlserveClient` (asyncio) both turn these functions
into methods with the same signatures, so the two can never drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from tlserve.clients.types import (
    Classification,
    Experiment,
    ExperimentEvidence,
    FeedbackItem,
    FeedbackReceipt,
    ImageLike,
    LabelCount,
    LabelSuggestion,
    LiveMonitoring,
    ModelSummary,
    Prediction,
    PredictResult,
    ServedModel,
    StreamReceipt,
    TrainingRun,
    TrainingStatus,
)
from tlserve.proto import classifier_pb2 as pb

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One RPC to make: the method of tlserve.v1.Classifier, its request (an iterator of
    requests for a client stream), and the conversion of the response."""

    method: str
    request: Any
    read: Callable[[Any], T]
    timeout: float | None = None  # None: the client's default


STRATEGIES = {
    "balanced": pb.BALANCED,
    "least_confidence": pb.LEAST_CONFIDENCE,
    "margin": pb.MARGIN,
    "entropy": pb.ENTROPY,
}


def image_message(image: ImageLike) -> pb.Image:
    """Encoded bytes or a file path are sent as-is; a uint8/float32 HxWx3 array as a tensor."""
    if isinstance(image, bytes):
        return pb.Image(encoded=image)
    if isinstance(image, str | Path):
        return pb.Image(encoded=Path(image).read_bytes())
    array = np.asarray(image)
    if array.dtype == np.uint8:
        dtype = pb.UINT8
    elif array.dtype == np.float32:
        dtype = pb.FLOAT32
    else:
        raise TypeError(f"pixel arrays must be uint8 or float32, got {array.dtype}")
    little_endian = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return pb.Image(
        tensor=pb.Tensor(dtype=dtype, shape=list(array.shape), data=little_endian.tobytes())
    )


def _classifications(scores: Iterable[pb.LabelScore]) -> tuple[Classification, ...]:
    return tuple(Classification(s.label, s.score) for s in scores)


def _predict_result(response: pb.PredictResponse) -> PredictResult:
    return PredictResult(
        model_version=response.model_version,
        predictions=tuple(
            Prediction(p.prediction_id, _classifications(p.top)) for p in response.predictions
        ),
        label_count=response.label_count,
    )


def _model_summary(info: pb.ModelInfo) -> ModelSummary:
    return ModelSummary(
        model=info.model,
        version=info.version,
        labels=tuple(info.labels),
        backbone_id=info.backbone_id,
        input_size=(info.input_height, info.input_width),
        created_at=info.created_at,
        parent_version=info.parent_version,
        serving=info.serving,
        execution_providers=tuple(info.execution_providers),
        card=json.loads(info.card_json) if info.card_json else {},
        live_accuracy=info.live_accuracy,
        live_feedback_count=info.live_feedback_count,
        error=info.error,
        training=_training_status(info.training) if info.HasField("training") else None,
        monitoring=_live_monitoring(info.monitoring) if info.HasField("monitoring") else None,
        experiment=_experiment(info.experiment) if info.HasField("experiment") else None,
    )


def _live_monitoring(monitoring: pb.LiveMonitoring) -> LiveMonitoring:
    return LiveMonitoring(
        estimated_accuracy=monitoring.estimated_accuracy,
        estimated_from=monitoring.estimated_from,
        temperature=monitoring.temperature,
        drift_state=monitoring.drift_state,
        drift_p_value=monitoring.drift_p_value,
        drift_statistic=monitoring.drift_statistic,
        drift_window=monitoring.drift_window,
        drift_tested_windows=monitoring.drift_tested_windows,
        drift_alarmed_windows=monitoring.drift_alarmed_windows,
    )


def _training_status(status: pb.TrainingStatus) -> TrainingStatus:
    last = status.last_run
    return TrainingStatus(
        state=status.state,
        detail=status.detail,
        updated_at=status.updated_at,
        stale=status.stale,
        last_run=TrainingRun(
            last.run_id,
            last.result,
            tuple(last.reasons),
            last.version,
            last.finished_at,
            last.labels,
        )
        if status.HasField("last_run")
        else None,
        waiting_classes=dict(status.waiting_classes),
        new_labels=status.new_labels,
        next_trigger=status.next_trigger,
    )


def training_status(*, model: str = "") -> Call[TrainingStatus]:
    """What the model's trainer is doing or waiting for, its last run, and what starts the
    next."""
    return Call("GetTrainingStatus", pb.GetTrainingStatusRequest(model=model), _training_status)


def _feedback_message(item: FeedbackItem) -> pb.SubmitFeedbackRequest:
    request = pb.SubmitFeedbackRequest(
        label=item.label,
        idempotency_key=item.idempotency_key,
        source=item.source,
        model=item.model,
    )
    if item.prediction_id:
        request.prediction_id = item.prediction_id
    else:
        assert item.image is not None
        request.image.CopyFrom(image_message(item.image))
    return request


def _receipt(response: pb.SubmitFeedbackResponse) -> FeedbackReceipt:
    return FeedbackReceipt(
        response.sample_id, response.label, response.duplicate, response.previous_label
    )


# ---- the calls ----------------------------------------------------------------------------


def predict(
    images: Iterable[ImageLike],
    top_k: int = 0,
    *,
    keep: bool = True,
    model: str = "",
    routing_key: str = "",
) -> Call[PredictResult]:
    """Classify images, all by one version of `model` (default: the server's default
    model). `keep=False`: the server keeps no record (no feedback by id, no suggestions
    from these images). `routing_key` (a user or session id): a canary experiment answers
    the same key with the same version; empty: the caller's credential decides."""
    request = pb.PredictRequest(
        images=[image_message(i) for i in images],
        top_k=top_k,
        do_not_keep=not keep,
        model=model,
        routing_key=routing_key,
    )
    return Call("Predict", request, _predict_result)


def predict_one(image: ImageLike, top_k: int = 0, *, model: str = "") -> Call[Prediction]:
    """Classify one image."""
    request = pb.PredictRequest(images=[image_message(image)], top_k=top_k, model=model)
    return Call("Predict", request, lambda response: _predict_result(response).predictions[0])


def get_model(version: str = "", *, model: str = "") -> Call[ModelSummary]:
    """A version of `model` (default: the one being served) with its card and live
    accuracy."""
    return Call("GetModel", pb.GetModelRequest(version=version, model=model), _model_summary)


def list_models(*, model: str = "") -> Call[tuple[list[ModelSummary], str]]:
    """Every published version of `model`, newest first, and the version its CURRENT
    names."""

    def read(response: pb.ListModelsResponse) -> tuple[list[ModelSummary], str]:
        return [_model_summary(m) for m in response.models], response.current_version

    return Call("ListModels", pb.ListModelsRequest(model=model), read)


def served_models() -> Call[list[ServedModel]]:
    """The models the server serves by name (the default first), each with its version."""

    def read(response: pb.ListServedModelsResponse) -> list[ServedModel]:
        return [ServedModel(m.name, m.version, m.is_default) for m in response.models]

    return Call("ListServedModels", pb.ListServedModelsRequest(), read)


def submit_feedback(
    label: str,
    *,
    prediction_id: str = "",
    image: ImageLike | None = None,
    idempotency_key: str = "",
    source: str = "",
    model: str = "",
) -> Call[FeedbackReceipt]:
    """Label a kept prediction (by id) or an image, for `model` (default: the default
    model); answered after a durable commit."""
    item = FeedbackItem(label, prediction_id, image, idempotency_key, source, model)
    return Call("SubmitFeedback", _feedback_message(item), _receipt)


def stream_feedback(
    items: Iterable[FeedbackItem], timeout: float | None = None
) -> Call[StreamReceipt]:
    """Bulk upload in one stream; one answer with a result per item (items the server
    refuses do not stop the stream). Items are converted as they are sent: one that
    cannot be (an unreadable file, say) ends the stream there and raises ValueError
    once the server has answered for the items before it."""
    unsendable: list[tuple[int, Exception]] = []

    def messages() -> Iterator[pb.SubmitFeedbackRequest]:
        for index, item in enumerate(items):
            try:
                message = _feedback_message(item)
            except (OSError, TypeError, ValueError) as exc:
                unsendable.append((index, exc))
                return
            yield message

    def read(response: pb.StreamFeedbackResponse) -> StreamReceipt:
        if unsendable:
            index, exc = unsendable[0]
            raise ValueError(
                f"feedback item {index} could not be sent ({exc}); the stream stopped there, "
                f"after the server stored {response.accepted} of the {index} items before it"
            )
        errors = tuple((r.index, r.error_code, r.error) for r in response.results if not r.accepted)
        duplicates = sum(r.duplicate for r in response.results)
        return StreamReceipt(response.accepted, response.rejected, errors, duplicates)

    return Call("StreamFeedback", messages(), read, timeout=timeout)


def list_labels(*, model: str = "") -> Call[list[LabelCount]]:
    """The model's labels with their sample counts and whether training uses them yet."""

    def read(response: pb.ListLabelsResponse) -> list[LabelCount]:
        return [
            LabelCount(e.label, e.samples, e.holdout, e.status, e.images_needed, e.labelers_needed)
            for e in response.labels
        ]

    return Call("ListLabels", pb.ListLabelsRequest(model=model), read)


def labels_added_since(timestamp: float, *, model: str = "") -> Call[int]:
    """How many samples got their current label at or after `timestamp` (unix seconds)."""
    return Call(
        "ListLabels",
        pb.ListLabelsRequest(added_after=timestamp, model=model),
        lambda response: int(response.labels_added),
    )


def conflicting_samples(*, model: str = "") -> Call[int]:
    """How many samples the model's labelers disagree on (each principal holds its own
    label): they train no class until one side retracts or an admin clears them."""
    return Call(
        "ListLabels",
        pb.ListLabelsRequest(model=model),
        lambda response: int(response.conflicting_samples),
    )


def retract_label(sample_id: str, *, model: str = "") -> Call[str]:
    """Undo a sample's current label (yours, or anyone's as an admin); returns that label."""
    return Call(
        "RetractLabel",
        pb.RetractLabelRequest(sample_id=sample_id, model=model),
        lambda response: response.retracted_label,
    )


def suggest_labels(
    count: int, strategy: str = "balanced", *, images: bool = True, model: str = ""
) -> Call[list[LabelSuggestion]]:
    """The kept predictions most worth labeling (strategy: balanced, the server's default;
    or entropy, margin, least_confidence), with their images as PNG unless `images=False`."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    request = pb.SuggestLabelsRequest(
        count=count, strategy=STRATEGIES[strategy], omit_images=not images, model=model
    )

    def read(response: pb.SuggestLabelsResponse) -> list[LabelSuggestion]:
        return [
            LabelSuggestion(
                s.prediction_id,
                s.uncertainty,
                s.model_version,
                _classifications(s.top),
                s.image_png,
            )
            for s in response.suggestions
        ]

    return Call("SuggestLabels", request, read)


def rollback(version: str = "", *, model: str = "") -> Call[tuple[str, str]]:
    """Admin: serve `version` of `model` (default: the one the current version replaced);
    returns (previous, current)."""

    def read(response: pb.RollbackResponse) -> tuple[str, str]:
        return response.previous_version, response.current_version

    return Call("Rollback", pb.RollbackRequest(version=version, model=model), read)


def start_experiment(
    challenger_version: str,
    rollout: str = "shadow",
    share: float = 1.0,
    *,
    model: str = "",
    max_labels: int = 0,
    max_hours: float = 0.0,
) -> Call[Experiment]:
    """Admin: judge `challenger_version` against the served version on live traffic;
    `rollout` "shadow" (it scores `share` of requests, the champion answers) or "canary"
    (it answers `share` of callers). Labels sent by prediction id decide it."""
    request = pb.StartExperimentRequest(
        model=model,
        challenger_version=challenger_version,
        rollout=rollout,
        share=share,
        max_labels=max_labels,
        max_hours=max_hours,
    )
    return Call("StartExperiment", request, _experiment)


def end_experiment(outcome: str, reason: str = "", *, model: str = "") -> Call[Experiment]:
    """Admin: end the running experiment now: `outcome` "promote" or "abandon"."""
    request = pb.EndExperimentRequest(model=model, outcome=outcome, reason=reason)
    return Call("EndExperiment", request, _experiment)


def _experiment(message: pb.Experiment) -> Experiment:
    evidence = message.evidence if message.HasField("evidence") else None
    return Experiment(
        champion_version=message.champion_version,
        challenger_version=message.challenger_version,
        rollout=message.rollout,
        share=message.share,
        state=message.state,
        reason=message.reason,
        started_at=message.started_at,
        started_by=message.started_by,
        ended_at=message.ended_at,
        ended_by=message.ended_by,
        deadline=message.deadline,
        max_labels=message.max_labels,
        alpha=message.alpha,
        evidence=ExperimentEvidence(
            decision=evidence.decision,
            reason=evidence.reason,
            pairs=evidence.pairs,
            wins=evidence.wins,
            losses=evidence.losses,
            champion_correct=evidence.champion_correct,
            challenger_correct=evidence.challenger_correct,
            p_better=evidence.p_better,
            p_worse=evidence.p_worse,
            win_share_low=evidence.win_share_low,
            win_share_high=evidence.win_share_high,
        )
        if evidence is not None
        else None,
    )


def trigger_training(reason: str = "", *, model: str = "") -> Call[int]:
    """Admin: ask the model's trainer for a run now; returns the request id."""
    request = pb.TriggerTrainingRequest(reason=reason, model=model)
    return Call("TriggerTraining", request, lambda response: response.request_id)


def approve_labels(labels: Iterable[str], *, model: str = "") -> Call[list[str]]:
    """Admin: let new labels into the model's training now; returns them as stored
    (normalised)."""
    request = pb.ApproveLabelsRequest(labels=list(labels), model=model)
    return Call("ApproveLabels", request, lambda response: list(response.labels))
