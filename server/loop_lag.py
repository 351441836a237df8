"""Measures the event loop's lag: every request on this process shares one loop, so any
work done on it (a large message parsed inline, a slow callback) stalls all of them.

A timer asks to wake every `interval`; how late it wakes is the lag, observed into
`tlserve_event_loop_lag_seconds`.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Histogram


class LoopLagMonitor:
    def __init__(self, histogram: Histogram, interval: float = 0.05) -> None:
        self.histogram = histogram
        self.interval = interval

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.perf_counter() - started - self.interval)
            self.histogram.observe(lag)
