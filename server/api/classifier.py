"""tlserve.v1.Classifier: converts protobuf to domain types and back, nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from tlserve.proto import classifier_pb2 as pb
from tlserve.proto import classifier_pb2_grpc as pb_grpc
from tlserve.server.admin import AdminGuard, ModelAdmin
from tlserve.server.api import codec
from tlserve.server.core import PredictionService
from tlserve.server.errors import NotFound, TlserveError
from tlserve.server.feedback import FeedbackInput, FeedbackService
from tlserve.server.imaging import encode_png
from tlserve.server.model_slot import ModelSlot
from tlserve.server.registry import ModelManifest, Registry


class ClassifierServicer(pb_grpc.ClassifierServicer):
    def __init__(
        self,
        predictions: PredictionService,
        feedback: FeedbackService,
        slot: ModelSlot,
        registry: Registry,
        admin: AdminGuard,
    ) -> None:
        self.admin = admin
        self.models = ModelAdmin(slot, registry)
        self.predictions = predictions
        self.feedback = feedback
        self.slot = slot
        self.registry = registry

    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        images = codec.images_from_proto(request.images)
        result = await self.predictions.predict(
            images, top_k=request.top_k, keep=not request.do_not_keep
        )
        return codec.predict_response(result)

    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitFeedbackResponse:
        stored = await self.feedback.submit(codec.feedback_from_proto(request))
        return codec.feedback_response(stored)

    async def StreamFeedback(
        self,
        request_iterator: AsyncIterator[pb.SubmitFeedbackRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.StreamFeedbackResponse:
        async def items() -> AsyncIterator[FeedbackInput | TlserveError]:
            async for request in request_iterator:
                try:
                    yield codec.feedback_from_proto(request)
                except TlserveError as exc:
                    yield exc

        return codec.stream_feedback_response(await self.feedback.submit_stream(items()))

    async def ListLabels(
        self, request: pb.ListLabelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLabelsResponse:
        return codec.labels_response(await self.feedback.label_counts())

    async def SuggestLabels(
        self, request: pb.SuggestLabelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SuggestLabelsResponse:
        strategy = codec.suggest_strategy(request.strategy)
        served = self.slot.current
        suggestions = await self.feedback.suggest(
            request.count, strategy, served.version if served else None
        )
        if request.omit_images:
            pngs = [b""] * len(suggestions)
        else:
            pngs = await asyncio.gather(
                *(asyncio.to_thread(encode_png, s.prediction.pixels) for s in suggestions)
            )
        return pb.SuggestLabelsResponse(
            suggestions=[codec.suggestion(s, png) for s, png in zip(suggestions, pngs, strict=True)]
        )

    async def Rollback(
        self, request: pb.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.RollbackResponse:
        self.admin.check(_bearer(context))
        previous, current = await self.models.rollback(request.version)
        return pb.RollbackResponse(previous_version=previous, current_version=current)

    async def TriggerTraining(
        self, request: pb.TriggerTrainingRequest, context: grpc.aio.ServicerContext
    ) -> pb.TriggerTrainingResponse:
        self.admin.check(_bearer(context))
        reason = request.reason.strip()[:200] or "TriggerTraining"
        request_id = await asyncio.to_thread(self.feedback.store.request_training, reason)
        return pb.TriggerTrainingResponse(request_id=request_id)

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        version = request.version or self.slot.require().version
        return await self._model_info(version)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        versions, current = await asyncio.gather(
            asyncio.to_thread(self.registry.versions), asyncio.to_thread(self.registry.current)
        )
        models = []
        for version in versions:
            try:
                models.append(await self._model_info(version))
            except NotFound:
                continue  # removed by retention between the listing and the read
        return pb.ListModelsResponse(models=models, current_version=current or "")

    async def _model_info(self, version: str) -> pb.ModelInfo:
        served = self.slot.current
        live = await self.feedback.live_accuracy(version)
        if served is not None and served.version == version:
            return codec.model_info(
                served.manifest, serving=True, providers=served.providers, live=live
            )
        manifest: ModelManifest = await asyncio.to_thread(self.registry.model_manifest, version)
        return codec.model_info(manifest, serving=False, live=live)


def _bearer(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value.removeprefix("Bearer ").strip()
    return None
