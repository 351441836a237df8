"""Every RPC passes here: requests are decoded, domain errors become status codes, and
metrics are recorded.

Requests are decoded here rather than by grpcio, so a malformed message (invalid
UTF-8 in a string field, a truncated varint) is INVALID_ARGUMENT with a reason instead
of grpcio's UNKNOWN and a logged traceback; large messages are decoded in a worker
thread, so parsing one never stalls the event loop every other request shares.

Every refused request is logged as one line with its request id (the caller's
`x-request-id`, or a new one), which the error's trailing metadata carries back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from tlserve.server.api.common import OFF_LOOP_BYTES, request_id_of
from tlserve.server.api.status import grpc_status_for
from tlserve.server.api.wire import RepeatedLimit, count_fields
from tlserve.server.drain import Admission
from tlserve.server.errors import InvalidInput, TlserveError, TooLarge
from tlserve.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class ServingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        metrics: ServerMetrics,
        admission: Admission,
        repeated_limits: Mapping[str, Sequence[RepeatedLimit]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.admission = admission
        # Per method name: repeated fields counted on the wire before decoding.
        self.repeated_limits = dict(repeated_limits or {})

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        decode = handler.request_deserializer
        limits = self.repeated_limits.get(method, ())
        if handler.unary_unary is not None and decode is not None:
            unary = handler.unary_unary

            async def decoded_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                _check_repeated(raw, limits, method)
                return await unary(await _decode(decode, raw, method), context)

            return grpc.unary_unary_rpc_method_handler(
                self._wrap(method, decoded_unary),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None and decode is not None:
            stream = handler.stream_unary

            async def decoded_stream(
                raws: AsyncIterator[bytes], context: grpc.aio.ServicerContext
            ) -> Any:
                async def requests() -> AsyncIterator[Any]:
                    async for raw in raws:
                        yield await _decode(decode, raw, method)

                return await stream(requests(), context)

            return grpc.stream_unary_rpc_method_handler(
                self._wrap(method, decoded_stream),
                response_serializer=handler.response_serializer,
            )
        # Streaming responses (health Watch, reflection) pass through unchanged.
        return handler

    def _wrap(self, method: str, behavior: Behavior) -> Behavior:
        metrics, admission = self.metrics, self.admission

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            in_flight = metrics.in_flight.labels(protocol="grpc", method=method)
            in_flight.inc()
            with admission.request():
                try:
                    return await behavior(request, context)
                except TlserveError as exc:
                    code = grpc_status_for(exc)
                    request_id = request_id_of(
                        dict(context.invocation_metadata() or ()).get("x-request-id")
                    )
                    log.info("request %s %s refused: %s: %s", request_id, method, code.name, exc)
                    trailing = (("x-request-id", request_id), *retry_metadata(exc))
                    await context.abort(code, str(exc), trailing)
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
                    metrics.observe_request(
                        "grpc", method, code.name, time.perf_counter() - started
                    )

        return handle


def retry_metadata(error: TlserveError) -> tuple[tuple[str, str], ...]:
    """`retry-after` (seconds, as in HTTP) for errors where waiting helps."""
    if error.retry_after_seconds is None:
        return ()
    return (("retry-after", f"{error.retry_after_seconds:.3f}"),)


def _check_repeated(raw: bytes, limits: Sequence[RepeatedLimit], method: str) -> None:
    if not limits:
        return
    seen = count_fields(raw, limits)
    over = seen.over(limits)
    if over is not None:
        raise TooLarge(
            f"the {method} request has more than {over.limit} {over.name}; "
            f"at most {over.limit} are accepted per request"
        )
    if seen.too_many_fields:
        raise TooLarge(
            f"the {method} request has more than {seen.max_fields} top-level fields; "
            "a request carries its repeated fields within their limits and a few others"
        )


async def _decode(decode: Callable[[bytes], Any], raw: bytes, method: str) -> Any:
    try:
        if len(raw) > OFF_LOOP_BYTES:
            return await asyncio.to_thread(decode, raw)
        return decode(raw)
    except DecodeError as exc:
        raise InvalidInput(
            f"the {method} request is not a valid protobuf message ({exc}); "
            "send it as the tlserve.v1 / inference protos define it"
        ) from None
