"""Token-bucket rate limits per principal, model and action.

Each (principal, model, action) has a bucket of `burst` tokens refilled at `rate` per
second; a request costs one token per image or item. An empty bucket refuses with
`RateLimited`, which says when enough tokens will be back, so a well-behaved client
waits exactly that long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from tlserve.server.errors import RateLimited

# Buckets of principals idle long enough to be full again are forgotten past this many.
MAX_BUCKETS = 10_000


class Action(StrEnum):
    PREDICT = "predict"
    FEEDBACK = "feedback"
    TRAINING = "training"
    SUGGEST = "suggest"


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: float

    @property
    def unlimited(self) -> bool:
        return self.per_second <= 0


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.updated = now


class RateLimits:
    def __init__(
        self, rates: Mapping[Action, Rate], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rates = dict(rates)
        self._clock = clock
        self._buckets: dict[tuple[Action, str, str], _Bucket] = {}
        # Feedback runs in worker threads too; a bucket's read-modify-write is one step.
        self._lock = threading.Lock()

    def take(self, principal: str, action: Action, cost: float = 1.0, model: str = "") -> None:
        """Spend `cost` tokens of the principal's bucket for `model`, or raise RateLimited:
        a principal busy with one model does not run dry on another."""
        rate = self.rates.get(action)
        if rate is None or rate.unlimited:
            return
        cost = min(cost, rate.burst)  # a request larger than the burst needs a full bucket
        with self._lock:
            now = self._clock()
            key = (action, principal, model)
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._forget_full(now)
                bucket = self._buckets[key] = _Bucket(rate.burst, now)
            refill = (now - bucket.updated) * rate.per_second
            bucket.tokens = min(rate.burst, bucket.tokens + refill)
            bucket.updated = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return
            wait = (cost - bucket.tokens) / rate.per_second
        raise RateLimited(
            f"{principal} is over its {action} rate limit{f' for model {model}' if model else ''} "
            f"({rate.per_second:g}/s, bursts of "
            f"{rate.burst:g}); retry in {wait:.2f} s",
            retry_after_seconds=wait,
        )

    def _forget_full(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            rate = self.rates[key[0]]
            if bucket.tokens + (now - bucket.updated) * rate.per_second >= rate.burst:
                del self._buckets[key]
