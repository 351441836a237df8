"""inference.GRPCInferenceService: the Open Inference Protocol (KServe v2) over the same core."""

from __future__ import annotations

import asyncio

import grpc

from tlserve.proto import grpc_predict_v2_pb2 as pb
from tlserve.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from tlserve.server import __version__
from tlserve.server.api import codec
from tlserve.server.core import PredictionService
from tlserve.server.errors import NotFound
from tlserve.server.model_slot import LoadedModel, ModelSlot
from tlserve.server.registry import Registry

PLATFORM = "onnxruntime_onnx"


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, predictions: PredictionService, slot: ModelSlot, registry: Registry, model_name: str
    ) -> None:
        self.predictions = predictions
        self.slot = slot
        self.registry = registry
        self.model_name = model_name

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.slot.current is not None)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="tlserve", version=__version__, extensions=["classification"]
        )

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        self._check_name(request.name)
        served = self.slot.current
        if not request.version:
            return pb.ModelReadyResponse(ready=served is not None)
        if served is not None and served.version == request.version:
            return pb.ModelReadyResponse(ready=True)
        await asyncio.to_thread(
            self.registry.model_manifest, request.version
        )  # NotFound if unknown
        return pb.ModelReadyResponse(ready=False)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        self._check_name(request.name)
        with self.slot.lease() as model:
            self._check_version(request.version, model)
            spec = model.input_spec
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=self.model_name,
                versions=[model.version],
                platform=PLATFORM,
                inputs=[
                    tensor(name=codec.KSERVE_IMAGE_INPUT, datatype="BYTES", shape=[-1]),
                    tensor(
                        name=codec.KSERVE_PIXELS_INPUT,
                        datatype="UINT8",
                        shape=[-1, spec.height, spec.width, 3],
                    ),
                ],
                outputs=[
                    tensor(
                        name=codec.KSERVE_PROBABILITIES_OUTPUT,
                        datatype="FP32",
                        shape=[-1, len(model.labels)],
                    ),
                    tensor(name=codec.KSERVE_LABEL_OUTPUT, datatype="BYTES", shape=[-1]),
                ],
            )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        self._check_name(request.model_name)
        if request.model_version:
            with self.slot.lease() as model:
                self._check_version(request.model_version, model)
        images = codec.kserve_images(request)
        result = await self.predictions.predict(images, top_k=1)
        return codec.kserve_response(request, self.model_name, result)

    def _check_name(self, name: str) -> None:
        if name != self.model_name:
            raise NotFound(f"unknown model {name!r}; this server serves {self.model_name!r}")

    @staticmethod
    def _check_version(version: str, model: LoadedModel) -> None:
        if version and version != model.version:
            raise NotFound(
                f"model version {version!r} is not being served; the served version is "
                f"{model.version!r} (leave the version empty to use it)"
            )
