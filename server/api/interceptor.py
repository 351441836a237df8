"""Every RPC passes here: domain errors become status codes, and metrics are recorded."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from tlserve.server.api.status import grpc_status_for
from tlserve.server.errors import TlserveError
from tlserve.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class ServingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # Streaming responses (health Watch, reflection) pass through unchanged.
        return handler

    def _wrap(self, method: str, behavior: Behavior) -> Behavior:
        metrics = self.metrics

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            in_flight = metrics.in_flight.labels(protocol="grpc", method=method)
            in_flight.inc()
            try:
                return await behavior(request, context)
            except TlserveError as exc:
                code = grpc_status_for(exc)
                await context.abort(code, str(exc))
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                log.exception("unhandled error in %s", method)
                code = grpc.StatusCode.INTERNAL
                await context.abort(code, f"internal error in {method}; see the server log")
            finally:
                in_flight.dec()
                metrics.observe_request("grpc", method, code.name, time.perf_counter() - started)

        return handle
