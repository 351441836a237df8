"""Keeps recent predictions so feedback can name them, off the request path.

Predict hands each scored image to `keep` (a dict insert); a background task writes
them to the store in batches and prunes by count and age. Lookups check the unflushed
buffer first, so feedback can name a prediction the moment its response is sent.
Kept predictions are a cache, not acknowledged data: a crash loses the last
unflushed fraction of a second, never a label. Keeping a 224x224 prediction costs
~150 KB of writes, so a rate cap (`keep_max_per_second`) bounds what serving pays at
high load; predictions over the cap are answered but not kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from tlserve.server.metrics import ServerMetrics
from tlserve.server.store.base import FeedbackStore, KeptPrediction

log = logging.getLogger(__name__)


class PredictionKeeper:
    def __init__(
        self,
        store: FeedbackStore,
        metrics: ServerMetrics,
        *,
        retention_count: int,
        retention_seconds: float,
        max_per_second: float = 0.0,
        max_bytes: int = 0,
        flush_seconds: float = 0.2,
        prune_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.retention_count = retention_count
        self.retention_seconds = retention_seconds
        self.flush_seconds = flush_seconds
        self.prune_seconds = prune_seconds
        self.max_per_second = max_per_second
        self.max_bytes = max_bytes
        # Bytes of the newest kept prediction: what the byte cap is counted in.
        self._row_bytes = 0
        self._tokens = max_per_second
        self._refilled_at = time.monotonic()
        self._pending: dict[str, KeptPrediction] = {}
        self._flush_lock = asyncio.Lock()

    def keep(self, predictions: Sequence[KeptPrediction]) -> None:
        allowed = self._take_tokens(len(predictions))
        if allowed < len(predictions):
            self.metrics.dropped_predictions.labels(reason="rate_limit").inc(
                len(predictions) - allowed
            )
        for prediction in predictions[:allowed]:
            self._pending[prediction.prediction_id] = prediction
        if allowed:
            self._row_bytes = _stored_bytes(predictions[0])
        overflow = len(self._pending) - self.max_count
        if overflow > 0:
            # The store fell behind by more than the whole retention: drop the oldest.
            for prediction_id in list(self._pending)[:overflow]:
                del self._pending[prediction_id]
            self.metrics.dropped_predictions.labels(reason="store_behind").inc(overflow)

    def _take_tokens(self, wanted: int) -> int:
        """Token bucket: at most `max_per_second` kept on average, bursts up to one second's."""
        if self.max_per_second <= 0:
            return wanted
        now = time.monotonic()
        self._tokens = min(
            self.max_per_second, self._tokens + (now - self._refilled_at) * self.max_per_second
        )
        self._refilled_at = now
        allowed = min(wanted, int(self._tokens))
        self._tokens -= allowed
        return allowed

    async def lookup(self, prediction_id: str, model: str = "") -> KeptPrediction | None:
        """A kept prediction of `model` ('' : the default model), pending or stored."""
        pending = self._pending.get(prediction_id)
        if pending is not None:
            return pending if pending.model == model else None
        return await asyncio.to_thread(self.store.for_model(model).prediction, prediction_id)

    async def flush(self) -> None:
        """Write what is pending. A batch the store refuses is retried row by row, and a
        row it still cannot store is dropped and counted: kept predictions are a cache,
        and one bad row must never jam the ones behind it."""
        async with self._flush_lock:
            if not self._pending:
                return
            batch = list(self._pending.values())
            try:
                await asyncio.to_thread(self.store.keep_predictions, batch)
            except Exception as exc:
                dropped = await asyncio.to_thread(self._keep_one_by_one, batch)
                if dropped:
                    log.warning(
                        "dropped %d of %d kept predictions the store refused: %s",
                        dropped,
                        len(batch),
                        exc,
                    )
            for prediction in batch:
                self._pending.pop(prediction.prediction_id, None)

    def _keep_one_by_one(self, batch: list[KeptPrediction]) -> int:
        dropped = 0
        for prediction in batch:
            try:
                self.store.keep_predictions([prediction])
            except Exception:
                dropped += 1
        if dropped:
            self.metrics.dropped_predictions.labels(reason="unstorable").inc(dropped)
        return dropped

    @property
    def max_count(self) -> int:
        """`retention_count`, or fewer when that many would exceed `max_bytes`."""
        if self.max_bytes <= 0 or self._row_bytes == 0:
            return self.retention_count
        return max(1, min(self.retention_count, self.max_bytes // self._row_bytes))

    async def prune(self) -> int:
        older_than = time.time() - self.retention_seconds
        return await asyncio.to_thread(
            self.store.prune_predictions, max_count=self.max_count, older_than=older_than
        )

    async def run(self) -> None:
        """Flush and prune until cancelled."""
        last_prune = 0.0
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
                if time.monotonic() - last_prune > self.prune_seconds:
                    await self.prune()
                    last_prune = time.monotonic()
            except Exception:
                log.exception("keeping predictions failed; retrying")


def _stored_bytes(prediction: KeptPrediction) -> int:
    return (
        prediction.pixels.nbytes
        + prediction.features.nbytes
        + prediction.probabilities.nbytes
        + 256  # ids, labels and the row's own overhead
    )
