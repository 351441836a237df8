"""inference.GRPCInferenceService (KServe v2 over gRPC): conversions over the same core."""

from __future__ import annotations

import grpc

from tlserve.proto import grpc_predict_v2_pb2 as pb
from tlserve.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from tlserve.server import __version__
from tlserve.server.api import codec
from tlserve.server.api.tensors import EXTENSIONS, SERVER_NAME, images_from_input
from tlserve.server.core import ServingCore


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: ServingCore) -> None:
        self.core = core

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core.is_ready())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=list(EXTENSIONS)
        )

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        ready = await self.core.is_model_ready(request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        signature = self.core.served_signature(
            codec.presented(context), request.name, request.version
        )
        return codec.kserve_metadata(signature)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        images = images_from_input(
            codec.kserve_inputs(request, self.core.max_images), self.core.max_images
        )
        result = await self.core.predict(
            codec.presented(context),
            images,
            top_k=1,
            version=request.model_version,
            model=request.model_name,
        )
        return codec.kserve_response(request, result)
