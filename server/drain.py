"""Which requests the server takes, and how many of those are still being handled, so a
shutdown can wait for exactly the work it admitted.

gRPC's own graceful stop cancels calls that reached the server but were not yet handed
to a handler (grpc/grpc#41785: the client sees CANCELLED, which it does not retry). So
the drain first closes admission (new work is UNAVAILABLE, which clients retry on
another replica) while the listeners stay open, waits until the admitted requests are
done, and only then stops the listeners.

Refused requests are not work to wait for: under clients that keep sending, counting
them kept a busy server from ever looking idle, so it waited out the whole grace period
and gRPC's stop cancelled whatever had arrived last. Adapters wrap every request in
`request()`; the core calls `admit()` before any work, and only then does the request
count. Probes never call `admit()`, so they keep answering (NOT_SERVING) while draining.

But refusals still say whether clients have noticed the drain: tlserve's clients stop
sending once they see NOT_SERVING, and a call that reaches gRPC after the last refusal
and before the stop is cancelled. On a loaded machine they noticed late (4 CANCELLED in
one of 6 drains under a busy CPU), so the drain also waits until no request has been
refused for `SETTLE_SECONDS`; for at most `REFUSALS_SECONDS`, since clients without
health checking never stop sending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from tlserve.server.errors import Unavailable

# How long refusals must have been answered with nothing admitted before the listeners
# close: calls gRPC had already received then reach a handler and are refused with
# UNAVAILABLE instead of being cancelled by the stop.
SETTLE_SECONDS = 0.1
# How long the drain waits for refusals to stop before closing regardless.
REFUSALS_SECONDS = 2.0


@dataclass
class _Request:
    admitted: bool = False


class Admission:
    """Admits work while open and counts the admitted requests still in flight; used from
    the event loop's thread only (the contextvar follows each request's task)."""

    def __init__(self) -> None:
        self.closed = False
        self.admitted = 0
        self._idle_since = time.monotonic()
        self._refused_at = 0.0
        self._current: ContextVar[_Request | None] = ContextVar("tlserve_request", default=None)

    @contextmanager
    def request(self) -> Iterator[None]:
        """Scope of one request, around everything an adapter does for it."""
        state = _Request()
        token = self._current.set(state)
        try:
            yield
        finally:
            self._current.reset(token)
            if state.admitted:
                self.admitted -= 1
                if self.admitted == 0:
                    self._idle_since = time.monotonic()

    def admit(self) -> None:
        """Takes the current request as work, or refuses it once the drain has begun."""
        if self.closed:
            self._refused_at = time.monotonic()
            raise Unavailable("the server is shutting down; retry (another replica answers)")
        state = self._current.get()
        if state is not None and not state.admitted:
            state.admitted = True
            self.admitted += 1

    def close(self) -> None:
        self.closed = True

    async def wait_idle(self, timeout: float) -> bool:
        """Until no admitted request has been in flight, and none was refused, for
        `SETTLE_SECONDS` (True), or `timeout` (False). Refusals are waited for only
        `REFUSALS_SECONDS` from the call."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            now = time.monotonic()
            quiet_since = self._idle_since
            if now - started < REFUSALS_SECONDS:
                quiet_since = max(quiet_since, self._refused_at)
            if self.admitted == 0 and now - quiet_since >= SETTLE_SECONDS:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(0.01)
