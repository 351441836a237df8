"""grpc.health.v1 for the server: Check and Watch over a table of service statuses, with
watches that end when the server stops.

grpcio-health-checking's servicer keeps every Watch open forever, so a graceful stop
waited out its whole grace period for them whenever a client watched (tlserve's clients
do: their load balancer skips a replica that says it is draining), and then cancelled
every call still open. Here `end_watches()` lets each Watch send its last status and
finish with OK, so the stop waits only for real requests.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthService(health_pb2_grpc.HealthServicer):
    """Statuses by service name; used from the event loop's thread only."""

    def __init__(self) -> None:
        self._statuses: dict[str, Status] = {}
        self._changed = asyncio.Condition()
        self._ended = False

    async def set(self, service: str, status: Status) -> None:
        async with self._changed:
            self._statuses[service] = status
            self._changed.notify_all()

    async def end_watches(self) -> None:
        """Every Watch sends what it has not sent yet and ends; later ones end at once."""
        async with self._changed:
            self._ended = True
            self._changed.notify_all()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        service = request.service
        sent: Status | None = None
        while True:
            # The lock is never held while writing: a slow watcher must not hold up `set`.
            async with self._changed:
                while not self._ended and self._status_of(service) == sent:
                    await self._changed.wait()
                status, ended = self._status_of(service), self._ended
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if ended:
                return

    def _status_of(self, service: str) -> Status:
        return self._statuses.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
