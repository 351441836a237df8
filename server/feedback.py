"""The protocol-free feedback core: labels in (durably), label counts and suggestions out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from tlserve.server.errors import InvalidInput, NotFound, TlserveError, quoted
from tlserve.server.imaging import ImageLimits, check_image, encode_png, validate_pixels
from tlserve.server.keeper import PredictionKeeper
from tlserve.server.metrics import ServerMetrics
from tlserve.server.store.base import FeedbackStore, KeptPrediction, StoredLabel, SuggestStrategy
from tlserve.server.store.labels import check_plain_text, normalize_label

MAX_SUGGESTIONS = 1000
MAX_PREDICTION_ID = 128
# Suggestions are picked for diversity among this many times as many uncertain candidates.
CANDIDATE_FACTOR = 5


@dataclass(frozen=True, slots=True)
class FeedbackInput:
    label: str
    prediction_id: str | None = None
    encoded: bytes | None = None
    pixels: np.ndarray | None = None
    idempotency_key: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class ItemResult:
    index: int
    stored: StoredLabel | None
    error: TlserveError | None


@dataclass(frozen=True, slots=True)
class Suggestion:
    prediction: KeptPrediction
    uncertainty: float


class FeedbackService:
    def __init__(
        self,
        store: FeedbackStore,
        keeper: PredictionKeeper,
        metrics: ServerMetrics,
        *,
        limits: ImageLimits,
        holdout_percent: float,
    ) -> None:
        self.store = store
        self.keeper = keeper
        self.metrics = metrics
        self.limits = limits
        self.holdout_percent = holdout_percent

    async def submit(self, item: FeedbackInput) -> StoredLabel:
        """Validate, store and commit one label; returns only after the durable commit."""
        try:
            stored = await self._submit(item)
        except TlserveError:
            self.metrics.feedback.labels(result="rejected").inc()
            raise
        self.metrics.feedback.labels(result="duplicate" if stored.duplicate else "accepted").inc()
        return stored

    async def submit_stream(
        self, items: AsyncIterator[FeedbackInput | TlserveError]
    ) -> list[ItemResult]:
        """Each item on its own: bad ones are reported, good ones stored, the stream goes on."""
        results = []
        index = 0
        async for item in items:
            if isinstance(item, TlserveError):
                self.metrics.feedback.labels(result="rejected").inc()
                results.append(ItemResult(index, None, item))
            else:
                try:
                    results.append(ItemResult(index, await self.submit(item), None))
                except TlserveError as exc:
                    results.append(ItemResult(index, None, exc))
            index += 1
        return results

    async def _submit(self, item: FeedbackInput) -> StoredLabel:
        for field, value in (
            ("source", item.source),
            ("idempotency_key", item.idempotency_key),
            ("prediction_id", item.prediction_id or ""),
        ):
            check_plain_text(field, value)
        label = normalize_label(item.label)
        source = item.source.strip()[:200] or "api"
        key = item.idempotency_key.strip() or None
        if key is not None and len(key) > 200:
            raise InvalidInput(f"idempotency_key is {len(key)} characters; at most 200")
        prediction: KeptPrediction | None = None
        if item.prediction_id and len(item.prediction_id) > MAX_PREDICTION_ID:
            raise InvalidInput(
                f"prediction_id {quoted(item.prediction_id)} is too long; ids are the "
                f"{MAX_PREDICTION_ID}-or-fewer-character ids Predict returned"
            )
        if item.prediction_id:
            prediction = await self.keeper.lookup(item.prediction_id)
            if prediction is None:
                raise NotFound(
                    f"prediction {quoted(item.prediction_id)} is unknown, expired or was not kept "
                    "(predictions are kept for a limited time, and at most keep_max_per_second "
                    "of them); send the image itself instead"
                )
            image = await asyncio.to_thread(encode_png, prediction.pixels)
        elif item.encoded is not None:
            await asyncio.to_thread(check_image, item.encoded, self.limits)
            image = item.encoded
        elif item.pixels is not None:
            pixels = validate_pixels(item.pixels, self.limits)
            image = await asyncio.to_thread(encode_png, pixels)
        else:
            raise InvalidInput("feedback names no image: set prediction_id or image")
        stored = await asyncio.to_thread(
            self.store.add_label,
            image=image,
            label=label,
            source=source,
            idempotency_key=key,
            prediction=prediction,
        )
        if prediction is not None and not stored.duplicate:
            outcome = "correct" if prediction.top_label == label else "wrong"
            version = prediction.model_version
            self.metrics.live_feedback.labels(version=version, outcome=outcome).inc()
            correct, total = await asyncio.to_thread(self.store.live_accuracy, version)
            self.metrics.live_accuracy.labels(version=version).set(correct / total)
        return stored

    async def label_counts(self) -> dict[str, tuple[int, int]]:
        return await asyncio.to_thread(self.store.label_counts, self.holdout_percent)

    async def suggest(
        self, count: int, strategy: SuggestStrategy, served_version: str | None = None
    ) -> list[Suggestion]:
        if not 1 <= count <= MAX_SUGGESTIONS:
            raise InvalidInput(f"count={count} is out of range; accepted 1..{MAX_SUGGESTIONS}")
        await self.keeper.flush()
        # The served version's own uncertainty is what counts; older versions' kept
        # predictions are only used when it has none yet.
        candidates = await asyncio.to_thread(
            self.store.unlabeled_predictions, strategy, count * CANDIDATE_FACTOR, served_version
        )
        if not candidates and served_version:
            candidates = await asyncio.to_thread(
                self.store.unlabeled_predictions, strategy, count * CANDIDATE_FACTOR
            )
        scores = np.array([c.uncertainty(strategy) for c in candidates])
        chosen = diverse_selection(candidates, scores, count)
        return [Suggestion(candidates[i], float(scores[i])) for i in chosen]

    async def request_training(self, reason: str) -> int:
        """Ask the trainer for a run now (it polls the store); returns the request id."""
        return await asyncio.to_thread(self.store.request_training, reason)

    async def live_accuracy(self, version: str) -> tuple[int, int]:
        return await asyncio.to_thread(self.store.live_accuracy, version)


def diverse_selection(
    candidates: list[KeptPrediction], scores: np.ndarray, count: int
) -> list[int]:
    """Greedy: uncertainty times distance to what is already chosen, so a batch of
    suggestions covers different kinds of images rather than n near-copies of one."""
    if not candidates:
        return []
    if len({c.features.shape for c in candidates}) > 1:
        # Predictions of versions with different backbones: their features don't compare.
        return [int(i) for i in np.argsort(-scores, kind="stable")[:count]]
    features = np.stack([c.features for c in candidates]).astype(np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.where(norms == 0, 1, norms)
    weight = scores / scores.max() if scores.max() > 0 else np.ones_like(scores)
    chosen = [int(np.argmax(scores))]
    distance = 1.0 - unit @ unit[chosen[0]]
    while len(chosen) < min(count, len(candidates)):
        value = weight * np.maximum(distance, 0)
        value[chosen] = -1
        best = int(np.argmax(value))
        if value[best] <= 0:  # everything left is a duplicate: fall back to uncertainty
            remaining = [i for i in np.argsort(-scores) if i not in chosen]
            chosen.extend(int(i) for i in remaining[: count - len(chosen)])
            break
        chosen.append(best)
        distance = np.minimum(distance, 1.0 - unit @ unit[best])
    return chosen
