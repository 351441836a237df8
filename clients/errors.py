"""Typed client exceptions: every failed call raises the subclass of `ApiError` for its
gRPC status, carrying the status code and the server's message.

They subclass `grpc.RpcError` and keep its `code()` and `details()`, so code written
against plain grpcio keeps working.
"""

from __future__ import annotations

import grpc


class ApiError(grpc.RpcError):
    """A call tlserve refused or could not answer."""

    status = grpc.StatusCode.UNKNOWN

    def __init__(
        self, status: grpc.StatusCode, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message
        # Seconds the server asks the caller to wait before retrying (rate limits, overload).
        self.retry_after = retry_after

    def code(self) -> grpc.StatusCode:
        return self.status

    def details(self) -> str:
        return self.message


class InvalidArgument(ApiError):
    """The request is malformed: bad image, tensor, label or parameter."""


class NotFound(ApiError):
    """Unknown model, version or prediction id."""


class AlreadyExists(ApiError):
    """An idempotency key was reused for a different payload."""


class ResourceExhausted(ApiError):
    """Too large for the server's limits, or the server is at capacity: back off."""


class FailedPrecondition(ApiError):
    """The server cannot do it yet, e.g. no model version is being served."""


class Aborted(ApiError):
    """A concurrent change won (CURRENT moved); read again and retry."""


class Unauthenticated(ApiError):
    """No valid credential was sent."""


class PermissionDenied(ApiError):
    """The credential does not allow this call."""


class Unavailable(ApiError):
    """The server is draining or unreachable (already retried with backoff)."""


class DeadlineExceeded(ApiError):
    """The call did not finish within its timeout."""


class Cancelled(ApiError):
    """The call was cancelled."""


class Internal(ApiError):
    """The server failed; its log says why."""


ERROR_BY_STATUS: dict[grpc.StatusCode, type[ApiError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
}


def from_rpc_error(error: grpc.RpcError) -> ApiError:
    """The typed exception for a grpcio error (sync or asyncio)."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else str(error)
    return ERROR_BY_STATUS.get(code, ApiError)(code, details or "", _retry_after(error))


def _retry_after(error: grpc.RpcError) -> float | None:
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == "retry-after":
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None
