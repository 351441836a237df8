"""tlserve.v1.Classifier over gRPC: converts protobuf to domain types and back, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from tlserve.proto import classifier_pb2 as pb
from tlserve.proto import classifier_pb2_grpc as pb_grpc
from tlserve.server.api import codec
from tlserve.server.core import ServingCore
from tlserve.server.errors import TlserveError
from tlserve.server.feedback import FeedbackInput


class ClassifierServicer(pb_grpc.ClassifierServicer):
    def __init__(self, core: ServingCore) -> None:
        self.core = core

    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        result = await self.core.predict(
            codec.presented(context),
            codec.images_from_proto(request.images, self.core.max_images),
            request.top_k,
            keep=not request.do_not_keep,
            model=request.model,
            routing_key=request.routing_key,
        )
        return codec.predict_response(result)

    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitFeedbackResponse:
        stored = await self.core.submit_feedback(
            codec.presented(context), codec.feedback_from_proto(request)
        )
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

        return codec.stream_feedback_response(
            await self.core.stream_feedback(codec.presented(context), items())
        )

    async def ListLabels(
        self, request: pb.ListLabelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLabelsResponse:
        added_after = request.added_after if request.HasField("added_after") else None
        overview = await self.core.labels(codec.presented(context), added_after, request.model)
        return codec.labels_response(overview)

    async def RetractLabel(
        self, request: pb.RetractLabelRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetractLabelResponse:
        retraction = await self.core.retract_label(
            codec.presented(context), request.sample_id, request.model
        )
        return codec.retraction_response(retraction)

    async def SuggestLabels(
        self, request: pb.SuggestLabelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SuggestLabelsResponse:
        suggestions = await self.core.suggest(
            codec.presented(context),
            request.count,
            codec.suggest_strategy(request.strategy),
            with_images=not request.omit_images,
            model=request.model,
        )
        return codec.suggestions_response(suggestions)

    async def Rollback(
        self, request: pb.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.RollbackResponse:
        rollback = await self.core.rollback(
            codec.presented(context), request.version, request.model
        )
        return codec.rollback_response(rollback)

    async def StartExperiment(
        self, request: pb.StartExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Experiment:
        report = await self.core.start_experiment(
            codec.presented(context),
            request.challenger_version,
            request.rollout,
            request.share,
            model=request.model,
            max_labels=request.max_labels,
            max_hours=request.max_hours,
        )
        return codec.experiment_message(report)

    async def EndExperiment(
        self, request: pb.EndExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Experiment:
        report = await self.core.end_experiment(
            codec.presented(context), request.outcome, request.reason, model=request.model
        )
        return codec.experiment_message(report)

    async def TriggerTraining(
        self, request: pb.TriggerTrainingRequest, context: grpc.aio.ServicerContext
    ) -> pb.TriggerTrainingResponse:
        request_id = await self.core.trigger_training(
            codec.presented(context), request.reason, request.model
        )
        return pb.TriggerTrainingResponse(request_id=request_id)

    async def ApproveLabels(
        self, request: pb.ApproveLabelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApproveLabelsResponse:
        labels = await self.core.approve_labels(
            codec.presented(context), request.labels, request.model
        )
        return pb.ApproveLabelsResponse(labels=labels)

    async def GetTrainingStatus(
        self, request: pb.GetTrainingStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.TrainingStatus:
        status = await self.core.training_status(codec.presented(context), request.model)
        return codec.training_status(status)

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        return codec.model_info(
            await self.core.model_info(codec.presented(context), request.version, request.model)
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        listing = await self.core.list_models(codec.presented(context), request.model)
        return codec.list_models_response(listing)

    async def ListServedModels(
        self, request: pb.ListServedModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListServedModelsResponse:
        return codec.served_models_response(self.core.served_models(codec.presented(context)))
