"""Domain exceptions of the serving core.

They know nothing about any protocol: `tlserve.server.api.status` maps each kind to a
gRPC status code and to an HTTP status, one table each. Messages say what was wrong
and what is accepted, because they reach users.
"""

from __future__ import annotations


def quoted(value: str, limit: int = 64) -> str:
    """A client-sent value for an error message: quoted, and cut at `limit` characters so
    a hostile 100 KB id cannot blow up the reply (gRPC carries messages in headers)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


class TlserveError(Exception):
    """Base of every error a client may see."""


class InvalidInput(TlserveError):
    """The request itself is malformed: bad image bytes, tensor, label, parameter."""


class TooLarge(TlserveError):
    """The request asks for more than the configured limits allow (pixels, batch size)."""


class Overloaded(TlserveError):
    """The server is at capacity (the batching queue is full); retry with backoff."""


class NotFound(TlserveError):
    """A named thing (model, version, prediction id) does not exist."""


class NoModel(TlserveError):
    """Nothing can be served yet, because no model version has been published."""


class Unavailable(TlserveError):
    """The server is shutting down or draining; retry on another replica."""


class Conflict(TlserveError):
    """A concurrent change won: CURRENT moved, or a version id was published already."""


class AlreadyExists(TlserveError):
    """An idempotency key was reused for a different payload."""


class Unauthenticated(TlserveError):
    """An admin call came without a token."""


class PermissionDenied(TlserveError):
    """An admin call came with a wrong token."""


class ModelRejected(TlserveError):
    """A published version failed verification and will not be served."""
