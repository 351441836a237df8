"""Sync and asyncio clients for tlserve.v1.Classifier.

Both retry UNAVAILABLE with exponential backoff (gRPC's own retry policy, so a
replica restarting under a load balancer is invisible to callers) and put a deadline
on every call. Results are plain dataclasses, not protobuf messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from tlserve.proto import classifier_pb2 as pb
from tlserve.proto import classifier_pb2_grpc as pb_grpc

ImageLike = bytes | str | Path | np.ndarray
DEFAULT_TARGET = "localhost:50051"


@dataclass(frozen=True, slots=True)
class Classification:
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Prediction:
    prediction_id: str
    top: tuple[Classification, ...]

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def score(self) -> float:
        return self.top[0].score


@dataclass(frozen=True, slots=True)
class PredictResult:
    model_version: str
    predictions: tuple[Prediction, ...]


@dataclass(frozen=True, slots=True)
class FeedbackReceipt:
    sample_id: str
    label: str
    duplicate: bool
    previous_label: str


@dataclass(frozen=True, slots=True)
class StreamReceipt:
    accepted: int
    rejected: int
    errors: tuple[tuple[int, str, str], ...]  # (item index, status name, reason)


@dataclass(frozen=True, slots=True)
class LabelSuggestion:
    prediction_id: str
    uncertainty: float
    model_version: str
    top: tuple[Classification, ...]
    image_png: bytes


@dataclass(frozen=True, slots=True)
class ModelSummary:
    version: str
    labels: tuple[str, ...]
    backbone_id: str
    input_size: tuple[int, int]
    created_at: str
    parent_version: str
    serving: bool
    execution_providers: tuple[str, ...]
    card: dict[str, Any]
    live_accuracy: float
    live_feedback_count: int


def _service_config(retries: int) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": "tlserve.v1.Classifier"}],
                    "retryPolicy": {
                        "maxAttempts": max(2, retries + 1),
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def _channel_options(retries: int, max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.enable_retries", 1 if retries > 0 else 0),
        ("grpc.service_config", _service_config(retries)),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


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


def _predict_request(images: Sequence[ImageLike], top_k: int, keep: bool) -> pb.PredictRequest:
    return pb.PredictRequest(
        images=[image_message(i) for i in images], top_k=top_k, do_not_keep=not keep
    )


def _predict_result(response: pb.PredictResponse) -> PredictResult:
    return PredictResult(
        model_version=response.model_version,
        predictions=tuple(
            Prediction(
                prediction_id=p.prediction_id,
                top=tuple(Classification(s.label, s.score) for s in p.top),
            )
            for p in response.predictions
        ),
    )


def model_summary(info: pb.ModelInfo) -> ModelSummary:
    return ModelSummary(
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
    )


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


_STRATEGIES = {
    "least_confidence": pb.LEAST_CONFIDENCE,
    "margin": pb.MARGIN,
    "entropy": pb.ENTROPY,
}


def feedback_request(
    label: str,
    *,
    prediction_id: str = "",
    image: ImageLike | None = None,
    idempotency_key: str = "",
    source: str = "",
) -> pb.SubmitFeedbackRequest:
    """Label a kept prediction (by id) or an image; exactly one of the two."""
    if bool(prediction_id) == (image is not None):
        raise ValueError("give exactly one of prediction_id and image")
    request = pb.SubmitFeedbackRequest(label=label, idempotency_key=idempotency_key, source=source)
    if prediction_id:
        request.prediction_id = prediction_id
    else:
        assert image is not None
        request.image.CopyFrom(image_message(image))
    return request


def _receipt(response: pb.SubmitFeedbackResponse) -> FeedbackReceipt:
    return FeedbackReceipt(
        response.sample_id, response.label, response.duplicate, response.previous_label
    )


def _stream_receipt(response: pb.StreamFeedbackResponse) -> StreamReceipt:
    errors = tuple((r.index, r.error_code, r.error) for r in response.results if not r.accepted)
    return StreamReceipt(response.accepted, response.rejected, errors)


def _suggestions(response: pb.SuggestLabelsResponse) -> list[LabelSuggestion]:
    return [
        LabelSuggestion(
            s.prediction_id,
            s.uncertainty,
            s.model_version,
            tuple(Classification(t.label, t.score) for t in s.top),
            s.image_png,
        )
        for s in response.suggestions
    ]


class TlserveClient:
    """Blocking client. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        max_message_bytes: int = 64 * 1024 * 1024,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        options = _channel_options(retries, max_message_bytes)
        self.channel = (
            grpc.secure_channel(target, credentials, options)
            if credentials
            else grpc.insecure_channel(target, options)
        )
        self.stub = pb_grpc.ClassifierStub(self.channel)
        self.timeout = timeout

    def predict(
        self, images: Iterable[ImageLike], top_k: int = 0, *, keep: bool = True
    ) -> PredictResult:
        """`keep=False`: the server keeps no record (no feedback by id, no suggestions)."""
        request = _predict_request(list(images), top_k, keep)
        response = self.stub.Predict(request, timeout=self.timeout)
        return _predict_result(response)

    def predict_one(self, image: ImageLike, top_k: int = 0) -> Prediction:
        return self.predict([image], top_k).predictions[0]

    def get_model(self, version: str = "") -> ModelSummary:
        return model_summary(
            self.stub.GetModel(pb.GetModelRequest(version=version), timeout=self.timeout)
        )

    def list_models(self) -> tuple[list[ModelSummary], str]:
        response = self.stub.ListModels(pb.ListModelsRequest(), timeout=self.timeout)
        return [model_summary(m) for m in response.models], response.current_version

    def submit_feedback(
        self,
        label: str,
        *,
        prediction_id: str = "",
        image: ImageLike | None = None,
        idempotency_key: str = "",
        source: str = "",
    ) -> FeedbackReceipt:
        request = feedback_request(
            label,
            prediction_id=prediction_id,
            image=image,
            idempotency_key=idempotency_key,
            source=source,
        )
        return _receipt(self.stub.SubmitFeedback(request, timeout=self.timeout))

    def stream_feedback(
        self, requests: Iterable[pb.SubmitFeedbackRequest], timeout: float | None = None
    ) -> StreamReceipt:
        """Bulk upload (build items with `feedback_request`); one answer for the stream."""
        response = self.stub.StreamFeedback(iter(requests), timeout=timeout)
        return _stream_receipt(response)

    def list_labels(self) -> dict[str, int]:
        response = self.stub.ListLabels(pb.ListLabelsRequest(), timeout=self.timeout)
        return {entry.label: entry.samples for entry in response.labels}

    def suggest_labels(
        self, count: int, strategy: str = "entropy", *, images: bool = True
    ) -> list[LabelSuggestion]:
        request = pb.SuggestLabelsRequest(
            count=count, strategy=_STRATEGIES[strategy], omit_images=not images
        )
        return _suggestions(self.stub.SuggestLabels(request, timeout=self.timeout))

    def rollback(self, version: str = "", *, token: str = "") -> tuple[str, str]:
        """Admin: serve `version` (default: the one the current version replaced)."""
        response = self.stub.Rollback(
            pb.RollbackRequest(version=version), timeout=self.timeout, metadata=_auth(token)
        )
        return response.previous_version, response.current_version

    def trigger_training(self, reason: str = "", *, token: str = "") -> int:
        """Admin: ask the trainer for a run now; returns the request id."""
        response = self.stub.TriggerTraining(
            pb.TriggerTrainingRequest(reason=reason), timeout=self.timeout, metadata=_auth(token)
        )
        return response.request_id

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> TlserveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTlserveClient:
    """asyncio client with the same methods as TlserveClient, awaitable."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        max_message_bytes: int = 64 * 1024 * 1024,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        options = _channel_options(retries, max_message_bytes)
        self.channel = (
            grpc.aio.secure_channel(target, credentials, options)
            if credentials
            else grpc.aio.insecure_channel(target, options)
        )
        self.stub = pb_grpc.ClassifierStub(self.channel)
        self.timeout = timeout

    async def predict(
        self, images: Iterable[ImageLike], top_k: int = 0, *, keep: bool = True
    ) -> PredictResult:
        request = _predict_request(list(images), top_k, keep)
        response = await self.stub.Predict(request, timeout=self.timeout)
        return _predict_result(response)

    async def predict_one(self, image: ImageLike, top_k: int = 0) -> Prediction:
        return (await self.predict([image], top_k)).predictions[0]

    async def get_model(self, version: str = "") -> ModelSummary:
        info = await self.stub.GetModel(pb.GetModelRequest(version=version), timeout=self.timeout)
        return model_summary(info)

    async def list_models(self) -> tuple[list[ModelSummary], str]:
        response = await self.stub.ListModels(pb.ListModelsRequest(), timeout=self.timeout)
        return [model_summary(m) for m in response.models], response.current_version

    async def submit_feedback(
        self,
        label: str,
        *,
        prediction_id: str = "",
        image: ImageLike | None = None,
        idempotency_key: str = "",
        source: str = "",
    ) -> FeedbackReceipt:
        request = feedback_request(
            label,
            prediction_id=prediction_id,
            image=image,
            idempotency_key=idempotency_key,
            source=source,
        )
        return _receipt(await self.stub.SubmitFeedback(request, timeout=self.timeout))

    async def stream_feedback(
        self, requests: Iterable[pb.SubmitFeedbackRequest], timeout: float | None = None
    ) -> StreamReceipt:
        response = await self.stub.StreamFeedback(iter(requests), timeout=timeout)
        return _stream_receipt(response)

    async def list_labels(self) -> dict[str, int]:
        response = await self.stub.ListLabels(pb.ListLabelsRequest(), timeout=self.timeout)
        return {entry.label: entry.samples for entry in response.labels}

    async def suggest_labels(
        self, count: int, strategy: str = "entropy", *, images: bool = True
    ) -> list[LabelSuggestion]:
        request = pb.SuggestLabelsRequest(
            count=count, strategy=_STRATEGIES[strategy], omit_images=not images
        )
        return _suggestions(await self.stub.SuggestLabels(request, timeout=self.timeout))

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncTlserveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
