"""Assembles the server: registry, model slot, batcher, the core, and its adapters (gRPC
services, HTTP), health, reflection and metrics."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from tlserve.proto import (
    classifier_pb2,
    classifier_pb2_grpc,
    grpc_predict_v2_pb2,
    grpc_predict_v2_pb2_grpc,
)
from tlserve.server.api.classifier import ClassifierServicer
from tlserve.server.api.http import HttpApi
from tlserve.server.api.http_body import BodyLimits
from tlserve.server.api.interceptor import ServingInterceptor
from tlserve.server.api.kserve import KServeServicer
from tlserve.server.api.wire import RepeatedLimit
from tlserve.server.classes import ClassPolicy, NewClassPolicy
from tlserve.server.core import ServingCore
from tlserve.server.drain import Admission
from tlserve.server.errors import StartupError
from tlserve.server.experiments import Experiments
from tlserve.server.feedback import FeedbackLimits, FeedbackService
from tlserve.server.fsutil import require_writable
from tlserve.server.health import HealthService
from tlserve.server.imaging import ImageLimits
from tlserve.server.keeper import PredictionKeeper
from tlserve.server.loop_lag import LoopLagMonitor
from tlserve.server.metrics import ServerMetrics
from tlserve.server.model_slot import LoadedModel, ModelLoader, ModelSlot
from tlserve.server.models import ModelSet
from tlserve.server.monitoring.metrics import ExperimentCollector, MonitoringCollector
from tlserve.server.prediction import PredictionService
from tlserve.server.runtime import SessionFactory
from tlserve.server.security.setup import build_security, exposed_hosts
from tlserve.server.settings import ServerSettings
from tlserve.server.store import open_store

log = logging.getLogger(__name__)

CLASSIFIER_SERVICE = classifier_pb2.DESCRIPTOR.services_by_name["Classifier"].full_name
KSERVE_SERVICE = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
# Alive and taking requests, even before a model exists (feedback is welcome then); it
# turns NOT_SERVING when the drain begins. Kubernetes' gRPC liveness probe may ask for it,
# and tlserve's clients watch it, so their load balancer stops sending to a replica that
# is going away (no model yet must not stop them, so it cannot be readiness).
LIVENESS_SERVICE = "liveness"
_MAX_INFER_TENSORS = 16


class TlserveServer:
    """One server process's worth of serving; `start`, then `stop` (or `serve_forever`)."""

    def __init__(self, settings: ServerSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        # First: a server that would be exposed without TLS or credentials never opens
        # its store or loads a model.
        self.security = build_security(settings)
        self.metrics_registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ServerMetrics(self.metrics_registry)
        for folder, setting in settings.folders_to_write():
            require_writable(folder, setting)
        self.registry = settings.open_registry()
        self.sessions = SessionFactory(settings.execution_provider, settings.intra_op_threads)
        loader = ModelLoader(
            self.registry,
            self.sessions,
            warmup_batch=settings.max_batch_size,
            monitoring=settings.monitoring(),
        )
        self.models = ModelSet(
            self.registry,
            lambda name, registry: self._new_slot(name, loader.for_registry(registry)),
            loader.backbones,
            default_name=settings.model_name,
            max_models=settings.max_models,
        )
        self.slot = self.models.default  # the default model's (tests wait on it)
        self.metrics_registry.register(MonitoringCollector(self.models.monitors))
        self.store = open_store(settings.resolved_store_url)
        self.keeper = PredictionKeeper(
            self.store,
            self.metrics,
            retention_count=settings.prediction_retention_count,
            retention_seconds=settings.prediction_retention_seconds,
            max_per_second=settings.keep_max_per_second,
            max_bytes=settings.keep_max_bytes,
        )
        limits = ImageLimits(settings.max_image_pixels, settings.max_image_side)
        feedback_limits = FeedbackLimits(
            images=limits,
            max_image_bytes=settings.max_feedback_image_bytes,
            fallback_side=settings.feedback_image_side,
            max_suggestions=settings.max_suggestions,
            max_stream_items=settings.max_stream_items,
            # Room for the reply's other fields: ids, scores, labels.
            suggestion_bytes=settings.max_message_bytes * 9 // 10,
        )
        class_policy = ClassPolicy(
            _new_class_policy(settings, self.security.has_credentials), settings.new_class_quorum
        )

        def feedback_for(slot: ModelSlot) -> FeedbackService:
            return FeedbackService(
                self.store.for_model(slot.stored_as),
                self.keeper,
                self.metrics,
                slot,
                limits=feedback_limits,
                holdout_percent=settings.holdout_percent,
                holdout_min_class_samples=settings.holdout_min_class_samples,
                class_policy=class_policy,
            )

        self._decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self._inference_pool = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.predictions = PredictionService(
            self.models,
            self.metrics,
            self._decode_pool,
            self._inference_pool,
            limits=limits,
            max_images_per_request=settings.max_images_per_request,
            default_top_k=settings.default_top_k,
            max_batch_size=settings.max_batch_size,
            max_delay_seconds=settings.max_queue_delay_ms / 1000.0,
            max_queue_items=settings.max_queue_size,
            keeper=self.keeper if settings.keep_predictions else None,
        )
        self.experiments = Experiments(
            self.models,
            lambda slot: self.store.for_model(slot.stored_as),
            settings.experiment_limits(),
        )
        self.metrics_registry.register(ExperimentCollector(self.experiments.running))
        self.core = ServingCore(
            self.predictions,
            feedback_for,
            self.models,
            self.security.access,
            self.security.limits,
            Admission(),
            self.experiments,
        )
        self.http = HttpApi(
            self.core,
            self.metrics,
            body_limits=BodyLimits(settings.max_message_bytes, settings.max_body_seconds),
            max_json_bytes=settings.max_json_bytes,
        )
        self.health = HealthService()
        self.loop_lag = LoopLagMonitor(self.metrics.loop_lag_seconds)
        self._grpc: grpc.aio.Server | None = None
        self._metrics_http: WSGIServer | None = None
        self._background: list[asyncio.Task[None]] = []
        self.port = 0
        self.http_port: int | None = None
        self.metrics_port: int | None = None

    async def start(self) -> None:
        settings = self.settings
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self._set_readiness(False)
        await self.models.refresh()
        if self.core.is_ready():
            await self._set_readiness(True)
        self.predictions.batcher.start()
        self._background = [
            asyncio.create_task(self.models.watch(settings.registry_poll_seconds), name="registry"),
            asyncio.create_task(self.keeper.run(), name="keeper"),
            asyncio.create_task(
                self.experiments.watch(settings.registry_poll_seconds), name="experiments"
            ),
            asyncio.create_task(self.loop_lag.run(), name="loop-lag"),
        ]
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(
            interceptors=[
                ServingInterceptor(self.metrics, self.core.admission, self._repeated_limits())
            ],
            options=options,
        )
        self._grpc = server  # stop() closes it even if a later listener fails to start
        classifier_pb2_grpc.add_ClassifierServicer_to_server(ClassifierServicer(self.core), server)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            KServeServicer(self.core), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if settings.reflection:
            reflection.enable_server_reflection(
                [
                    CLASSIFIER_SERVICE,
                    KSERVE_SERVICE,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ],
                server,
            )
        tls = self.security.tls
        address = f"{settings.host}:{settings.port}"
        with _listening("gRPC", settings.host, settings.port, "TLSERVE_PORT / --port"):
            self.port = (
                server.add_secure_port(address, tls.grpc_credentials())
                if tls is not None
                else server.add_insecure_port(address)
            )
            if self.port == 0:
                raise OSError("the address is not available")
        await server.start()
        if settings.http_port is not None:
            host = settings.http_host or settings.host
            with _listening(
                "HTTP", host, settings.http_port, "TLSERVE_HTTP_PORT (`none`: no HTTP API)"
            ):
                self.http_port = await self.http.start(
                    host,
                    settings.http_port,
                    settings.drain_seconds,
                    tls.ssl_context() if tls is not None else None,
                )
        if settings.metrics_port is not None:
            host = settings.metrics_host or settings.host
            with _listening(
                "metrics",
                host,
                settings.metrics_port,
                "TLSERVE_METRICS_PORT or --metrics-port (`none`: no metrics endpoint)",
            ):
                http, _thread = start_http_server(
                    settings.metrics_port, addr=host, registry=self.metrics_registry
                )
            self._metrics_http = http
            self.metrics_port = http.server_port
        log.info(
            "tlserve-server listening: gRPC %s:%d, HTTP %s, metrics %s (TLS %s); registry %s, "
            "providers %s",
            settings.host,
            self.port,
            self.http_port if self.http_port is not None else "off",
            self.metrics_port if self.metrics_port is not None else "off",
            "mutual" if tls is not None and tls.mutual else "on" if tls is not None else "off",
            self.registry.describe(),
            ",".join(self.sessions.providers),
        )

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING and refuse new work (UNAVAILABLE, which clients retry)
        while the listeners stay open, let what was admitted finish, then close them.

        Closing first would let gRPC cancel calls it had received but not yet handed to
        a handler (see `drain.py`)."""
        grace = self.settings.drain_seconds if grace is None else grace
        started = time.monotonic()
        await self._set_readiness(False)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.core.admission.close()
        await self.core.admission.wait_idle(grace)
        await self.health.end_watches()
        remaining = max(0.0, grace - (time.monotonic() - started))
        stopping = [self.http.stop()]
        if self._grpc is not None:
            stopping.append(self._grpc.stop(remaining))
        await asyncio.gather(*stopping)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.predictions.batcher.stop()
        await self.keeper.flush()
        self.store.close()
        self.models.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        self._decode_pool.shutdown(wait=True)
        self._inference_pool.shutdown(wait=True)

    async def wait_for_termination(self) -> None:
        assert self._grpc is not None
        await self._grpc.wait_for_termination()

    def _repeated_limits(self) -> dict[str, list[RepeatedLimit]]:
        """What gRPC requests may repeat, counted before they are decoded."""
        predict = classifier_pb2.PredictRequest.DESCRIPTOR.fields_by_name
        infer = grpc_predict_v2_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name
        return {
            "Predict": [
                RepeatedLimit(
                    predict["images"].number, "images", self.settings.max_images_per_request
                )
            ],
            # ModelInfer takes one input; a few more are refused with a reason, not counted.
            "ModelInfer": [
                RepeatedLimit(infer[name].number, name, _MAX_INFER_TENSORS)
                for name in ("inputs", "outputs", "raw_input_contents")
            ],
        }

    def _new_slot(self, name: str, loader: ModelLoader) -> ModelSlot:
        slot = ModelSlot(
            loader.registry,
            loader,
            self.metrics,
            refused_retry_seconds=self.settings.refused_retry_seconds,
            model_name=name,
        )
        slot.on_swap(self._on_swap)
        return slot

    def _on_swap(self, model: LoadedModel) -> None:
        if not self.core.admission.closed:
            asyncio.get_running_loop().create_task(self._set_readiness(True))

    async def _set_readiness(self, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", CLASSIFIER_SERVICE, KSERVE_SERVICE):
            await self.health.set(service, status)


@contextmanager
def _listening(what: str, host: str, port: int, setting: str) -> Iterator[None]:
    """StartupError naming the listener, address and setting when binding fails. The port
    is tried first with a plain socket: grpc's own failure is a RuntimeError after a
    C-core log line, and says less."""
    try:
        if port:
            bare = host.strip("[]")
            family = socket.AF_INET6 if ":" in bare else socket.AF_INET
            with socket.create_server((bare, port), family=family):
                pass
        yield
    except (OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartupError(
            f"cannot listen on {host}:{port} for {what}: {reason}; choose another port with "
            f"{setting}"
        ) from None


def _new_class_policy(settings: ServerSettings, credentials: bool) -> NewClassPolicy:
    """`auto`: open only where everyone who can reach the server is trusted alike (on
    loopback, with no credentials); a server that tells its callers apart quarantines."""
    if settings.new_class_policy != "auto":
        return NewClassPolicy(settings.new_class_policy)
    if exposed_hosts(settings) or credentials:
        return NewClassPolicy.QUARANTINE
    return NewClassPolicy.OPEN
