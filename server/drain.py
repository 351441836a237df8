"""Counts the requests being handled, so a shutdown can wait for them.

gRPC's own graceful stop cancels calls that reached the server but were not yet handed
to a handler (grpc/grpc#41785: the client sees CANCELLED, which it does not retry). So
the drain first refuses new work in the core (UNAVAILABLE, which clients retry) while
the listeners stay open, waits here until nothing has been in flight for a moment, and
only then stops the listeners.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager


class InFlight:
    """Requests being handled now; used from the event loop's thread only."""

    def __init__(self) -> None:
        self.count = 0
        self._last_change = time.monotonic()

    @contextmanager
    def track(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1
            self._last_change = time.monotonic()

    async def wait_quiet(self, quiet_seconds: float, timeout: float) -> bool:
        """Until nothing has been in flight for `quiet_seconds` (True), or `timeout` (False)."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if self.count == 0 and now - self._last_change >= quiet_seconds:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(min(0.01, quiet_seconds))
