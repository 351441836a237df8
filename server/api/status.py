"""The two tables from domain exceptions to protocol statuses: gRPC codes and HTTP.

Every adapter answers a domain error through these; an error kind missing here is a
bug and surfaces as INTERNAL / 500.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TypeVar

import grpc

from tlserve.server import errors

S = TypeVar("S")

GRPC_STATUS: dict[type[errors.TlserveError], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.TimedOut: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.NoModel: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelRejected: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotWritable: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}

HTTP_STATUS: dict[type[errors.TlserveError], HTTPStatus] = {
    errors.InvalidInput: HTTPStatus.BAD_REQUEST,
    errors.TooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    errors.TimedOut: HTTPStatus.REQUEST_TIMEOUT,
    errors.Overloaded: HTTPStatus.TOO_MANY_REQUESTS,
    errors.RateLimited: HTTPStatus.TOO_MANY_REQUESTS,
    errors.NotFound: HTTPStatus.NOT_FOUND,
    # Nothing to serve yet: the server is up but not ready, as its readiness probe says.
    errors.NoModel: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.ModelRejected: HTTPStatus.CONFLICT,
    # This replica cannot make the change; the operator must fix its volume or policy.
    errors.NotWritable: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.Unavailable: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.AlreadyExists: HTTPStatus.CONFLICT,
    errors.Conflict: HTTPStatus.CONFLICT,
    errors.Unauthenticated: HTTPStatus.UNAUTHORIZED,
    errors.PermissionDenied: HTTPStatus.FORBIDDEN,
}


def grpc_status_for(error: errors.TlserveError) -> grpc.StatusCode:
    return _lookup(GRPC_STATUS, error, grpc.StatusCode.INTERNAL)


def http_status_for(error: errors.TlserveError) -> HTTPStatus:
    return _lookup(HTTP_STATUS, error, HTTPStatus.INTERNAL_SERVER_ERROR)


def _lookup(table: dict[type[errors.TlserveError], S], error: errors.TlserveError, default: S) -> S:
    for kind in type(error).__mro__:
        if kind in table:
            return table[kind]
    return default
