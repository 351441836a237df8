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


class StartupError(Exception):
    """The server cannot start as configured (a port taken, an address not ours); the
    message names the listener, the address and the setting to change."""


class TlserveError(Exception):
    """Base of every error a client may see.

    `retry_after_seconds` is set where retrying later helps: adapters pass it on
    (gRPC `retry-after` trailing metadata, HTTP `Retry-After`)."""

    retry_after_seconds: float | None = None

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        if retry_after_seconds is not None:
            self.retry_after_seconds = retry_after_seconds


class InvalidInput(TlserveError):
    """The request itself is malformed: bad image bytes, tensor, label, parameter."""


class TooLarge(TlserveError):
    """The request asks for more than the configured limits allow (pixels, batch size)."""


class TimedOut(TlserveError):
    """The request took too long to arrive (a body sent slower than the server waits for)."""


class Overloaded(TlserveError):
    """The server is at capacity (the batching queue is full); retry with backoff."""

    retry_after_seconds = 1.0


class RateLimited(TlserveError):
    """The caller is over its rate limit; the error says when to retry."""


class NotFound(TlserveError):
    """A named thing (model, version, prediction id) does not exist."""


class NoModel(TlserveError):
    """Nothing can be served yet, because no model version has been published."""

    retry_after_seconds = 5.0


class Unavailable(TlserveError):
    """The server is shutting down or draining; retry on another replica."""

    retry_after_seconds = 1.0


class Conflict(TlserveError):
    """A concurrent change won: CURRENT moved, or a version id was published already."""


class AlreadyExists(TlserveError):
    """An idempotency key was reused for a different payload."""


class Unauthenticated(TlserveError):
    """No valid credential: none where one is needed, a malformed or an unknown one."""


class PermissionDenied(TlserveError):
    """A valid credential whose role does not allow the call."""


class NotWritable(TlserveError):
    """What the call must change is read-only to this process (a registry volume owned by
    another uid, a read-only mount, a bucket policy): a deployment fault, not the caller's."""


class ModelRejected(TlserveError):
    """A published version failed verification and will not be served."""


class StoreTooNew(StartupError):
    """The feedback store was written by a newer release (a schema this code does not know)."""
