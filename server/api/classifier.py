"""tlserve.v1.Classifier: converts protobuf to domain types and back, nothing more."""

from __future__ import annotations

import asyncio

import grpc

from clients._generated.tlserve.v1 import classifier_pb2 as pb
from clients._generated.tlserve.v1 import classifier_pb2_grpc as pb_grpc
from server.api import codec
from server.core import PredictionService
from server.errors import NotFound
from server.model_slot import ModelSlot
from server.registry import Registry


class ClassifierServicer(pb_grpc.ClassifierServicer):
    def __init__(self, predictions: PredictionService, slot: ModelSlot, registry: Registry) -> None:
        self.predictions = predictions
        self.slot = slot
        self.registry = registry

    async def Predict(
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
    ) -> pb.PredictResponse:
        images = codec.images_from_proto(request.images)
        result = await self.predictions.predict(images, top_k=request.top_k)
        return codec.predict_response(result)

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        served = self.slot.current
        version = request.version or self.slot.require().version
        if served is not None and served.version == version:
            return codec.model_info(served.manifest, serving=True, providers=served.providers)
        manifest = await asyncio.to_thread(self.registry.model_manifest, version)
        return codec.model_info(manifest, serving=False)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        served = self.slot.current
        versions, current = await asyncio.gather(
            asyncio.to_thread(self.registry.versions), asyncio.to_thread(self.registry.current)
        )
        models = []
        for version in versions:
            if served is not None and served.version == version:
                models.append(
                    codec.model_info(served.manifest, serving=True, providers=served.providers)
                )
                continue
            try:
                manifest = await asyncio.to_thread(self.registry.model_manifest, version)
            except NotFound:
                continue  # removed by retention between the listing and the read
            models.append(codec.model_info(manifest, serving=False))
        return pb.ListModelsResponse(models=models, current_version=current or "")
