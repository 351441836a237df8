"""The protocol-free feedback core: labels in (durably), label counts and suggestions out."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from tlserve.server.classes import ClassPolicy, LabelStatus, NewClassPolicy
from tlserve.server.errors import InvalidInput, NotFound, TlserveError, TooLarge, quoted
from tlserve.server.imaging import (
    ImageLimits,
    InputSpec,
    decode_image,
    downscale_to_cover,
    encode_png,
    pixels_to_cover,
    prepare_pixels,
    validate_pixels,
)
from tlserve.server.keeper import PredictionKeeper
from tlserve.server.metrics import ServerMetrics
from tlserve.server.model_slot import ModelSlot
from tlserve.server.selection import (
    Candidate,
    balanced_selection,
    comparable,
    diverse_selection,
)
from tlserve.server.store.base import (
    FeedbackStore,
    KeptPrediction,
    StoredLabel,
    SuggestStrategy,
    content_id_of,
)
from tlserve.server.store.labels import check_plain_text, holdout_share, normalize_label
from tlserve.server.training_status import TrainingStatus

MAX_PREDICTION_ID = 128
# sha256 of the stored image (store.base.sample_id_of).
SAMPLE_ID = re.compile(r"[0-9a-f]{64}")
MAX_APPROVALS = 1000
# Single-score strategies pick for diversity among this many times as many candidates.
CANDIDATE_FACTOR = 5
# `balanced` judges typicality against this many recent unlabeled predictions.
BALANCED_POOL = 1000


@dataclass(frozen=True, slots=True)
class FeedbackInput:
    label: str
    prediction_id: str | None = None
    encoded: bytes | None = None
    pixels: np.ndarray | None = None
    idempotency_key: str = ""
    source: str = ""
    # The model the label is for ('' : the default model).
    model: str = ""


@dataclass(frozen=True, slots=True)
class ItemResult:
    index: int
    stored: StoredLabel | None
    error: TlserveError | None


@dataclass(frozen=True, slots=True)
class Suggestion:
    prediction: KeptPrediction
    uncertainty: float


@dataclass(frozen=True, slots=True)
class LabelInfo:
    """A label with its samples (of which in the holdout) and whether training uses it."""

    label: str
    samples: int
    holdout: int
    status: LabelStatus
    labelers_needed: int  # distinct principals still needed (quarantined labels)

    @property
    def images_needed(self) -> int:
        """Images still needed, at least: each labeler still needed brings one or more."""
        return self.labelers_needed


@dataclass(frozen=True, slots=True)
class FeedbackLimits:
    """What one caller may put into the store or get out of it."""

    images: ImageLimits
    max_image_bytes: int
    # Stored images cover the served model's input; this square before any is served.
    fallback_side: int
    max_suggestions: int
    # StreamFeedback reads at most this many items (one reply holds all their results).
    max_stream_items: int
    # SuggestLabels stops adding images beyond this many bytes of PNG (one reply).
    suggestion_bytes: int


class FeedbackService:
    def __init__(
        self,
        store: FeedbackStore,
        keeper: PredictionKeeper,
        metrics: ServerMetrics,
        slot: ModelSlot,
        *,
        limits: FeedbackLimits,
        holdout_percent: float,
        holdout_min_class_samples: int,
        class_policy: ClassPolicy,
    ) -> None:
        self.store = store
        self.keeper = keeper
        self.metrics = metrics
        self.slot = slot
        self.limits = limits
        self.holdout_percent = holdout_percent
        self.holdout_min_class_samples = holdout_min_class_samples
        self.class_policy = class_policy
        self._approved_here: set[str] = set()

    async def submit(self, item: FeedbackInput, principal: str) -> StoredLabel:
        """Validate, store and commit one label; returns only after the durable commit.
        `principal` is who the server authenticated, recorded with the label."""
        try:
            stored = await self._submit(item, principal)
        except TlserveError:
            self._count("rejected")
            raise
        self._count("duplicate" if stored.duplicate else "accepted")
        return stored

    def _count(self, result: str) -> None:
        self.metrics.feedback.labels(model=self.slot.model_name, result=result).inc()

    async def submit_stream(
        self,
        items: AsyncIterator[FeedbackInput | TlserveError],
        submit: Callable[[FeedbackInput], Awaitable[StoredLabel]],
    ) -> list[ItemResult]:
        """Each item on its own through `submit`: bad ones are reported, good ones stored,
        the stream goes on."""
        results = []
        index = 0
        async for item in items:
            if index == self.limits.max_stream_items:
                # Stop reading: the reply (one result per item) stays bounded, and every
                # item before this one keeps its result.
                results.append(
                    ItemResult(
                        index,
                        None,
                        TooLarge(
                            f"the stream has more than {self.limits.max_stream_items} items; "
                            "this one and any after it were not read: send them in another "
                            "stream"
                        ),
                    )
                )
                break
            if isinstance(item, TlserveError):
                self._count("rejected")
                results.append(ItemResult(index, None, item))
            else:
                try:
                    results.append(ItemResult(index, await submit(item), None))
                except TlserveError as exc:
                    results.append(ItemResult(index, None, exc))
            index += 1
        return results

    async def _submit(self, item: FeedbackInput, principal: str) -> StoredLabel:
        for field, value in (
            ("source", item.source),
            ("idempotency_key", item.idempotency_key),
            ("prediction_id", item.prediction_id or ""),
        ):
            check_plain_text(field, value)
        label = normalize_label(item.label)
        known = self._known_labels()
        new_class = label not in known
        if new_class and self.class_policy.policy == NewClassPolicy.CLOSED:
            approved = await asyncio.to_thread(self.store.approved_labels)
            self.class_policy.check_submission(label, known, approved)
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
            prediction = await self.keeper.lookup(item.prediction_id, self.store.model)
            if prediction is None:
                raise NotFound(
                    f"prediction {quoted(item.prediction_id)} is unknown, expired or was not kept "
                    "(predictions are kept for a limited time, and at most keep_max_per_second "
                    "of them); send the image itself instead"
                )
            image = await asyncio.to_thread(encode_png, prediction.pixels)
            content_id = prediction.content
        elif item.encoded is not None:
            if len(item.encoded) > self.limits.max_image_bytes:
                raise TooLarge(
                    f"the feedback image is {len(item.encoded)} bytes; at most "
                    f"{self.limits.max_image_bytes} are accepted"
                )
            encoded = item.encoded
            image, content_id = await asyncio.to_thread(
                lambda: (
                    downscale_to_cover(encoded, *self._stored_size(), self.limits.images),
                    self._content_id(lambda spec: decode_image(encoded, spec, self.limits.images)),
                )
            )
        elif item.pixels is not None:
            pixels = validate_pixels(item.pixels, self.limits.images)
            image, content_id = await asyncio.to_thread(
                lambda: (
                    encode_png(pixels_to_cover(pixels, *self._stored_size())),
                    self._content_id(lambda spec: prepare_pixels(pixels, spec, self.limits.images)),
                )
            )
        else:
            raise InvalidInput("feedback names no image: set prediction_id or image")
        stored = await asyncio.to_thread(
            self.store.add_label,
            image=image,
            label=label,
            source=source,
            principal=principal,
            idempotency_key=key,
            prediction=prediction,
            content_id=content_id,
        )
        if new_class and self.class_policy.policy == NewClassPolicy.OPEN:
            await self._approve_once(label)
        if prediction is not None and not stored.duplicate:
            outcome = "correct" if prediction.top_label == label else "wrong"
            version = prediction.model_version
            model = self.slot.model_name
            self.metrics.live_feedback.labels(model=model, version=version, outcome=outcome).inc()
            correct, total = await asyncio.to_thread(self.store.live_accuracy, version)
            self.metrics.live_accuracy.labels(model=model, version=version).set(correct / total)
        return stored

    async def _approve_once(self, label: str) -> None:
        """Under `open`, a new label is approved as it arrives (the trainer admits known,
        approved and quorate labels whatever the server's policy)."""
        if label in self._approved_here:
            return
        await asyncio.to_thread(self.store.approve_labels, [label], "policy:open")
        self._approved_here.add(label)

    def _known_labels(self) -> tuple[str, ...]:
        """The labels of the served version: never new classes."""
        served = self.slot.current
        return served.labels if served is not None else ()

    def _content_id(self, as_input: Callable[[InputSpec], np.ndarray]) -> str | None:
        """The content id a Predict of this image would give under the served version, so
        an image labeled as a file is not suggested when it is predicted later."""
        served = self.slot.current
        return content_id_of(as_input(served.input_spec)) if served is not None else None

    def _stored_size(self) -> tuple[int, int]:
        served = self.slot.current
        if served is None:
            return self.limits.fallback_side, self.limits.fallback_side
        return served.input_spec.height, served.input_spec.width

    async def labels(self) -> list[LabelInfo]:
        counts, approved = await asyncio.gather(
            self._label_counts(), asyncio.to_thread(self.store.approved_labels)
        )
        known = self._known_labels()
        infos = []
        for label, (samples, hashed, labelers) in counts.items():
            holdout = holdout_share(samples, hashed, self.holdout_min_class_samples)
            status, needed = self.class_policy.status(label, labelers, known, approved)
            infos.append(LabelInfo(label, samples, holdout, status, needed))
        return infos

    async def conflicts(self) -> int:
        """Samples whose labelers disagree."""
        return await asyncio.to_thread(self.store.conflicting_samples)

    async def labels_added_since(self, created_at: float) -> int:
        return await asyncio.to_thread(self.store.labels_added_since, created_at)

    async def retract(self, sample_id: str, principal: str, *, any_principal: bool) -> str:
        if not SAMPLE_ID.fullmatch(sample_id):
            raise InvalidInput(
                f"sample_id {quoted(sample_id, 80)} is not a sample id: 64 lowercase hex "
                "digits, as SubmitFeedback returned it"
            )
        return await asyncio.to_thread(
            self.store.retract_label, sample_id, principal, any_principal=any_principal
        )

    async def approve_labels(self, labels: list[str], principal: str) -> list[str]:
        if not 1 <= len(labels) <= MAX_APPROVALS:
            raise InvalidInput(f"name 1..{MAX_APPROVALS} labels to approve, got {len(labels)}")
        normalized = sorted({normalize_label(label) for label in labels})
        await asyncio.to_thread(self.store.approve_labels, normalized, principal)
        return normalized

    def _drifted(self, kept: list[KeptPrediction]) -> list[int] | None:
        """While the served version's drift alarm is on: the candidates whose features lie
        outside its training features (the drifted region), so labels go where the model
        no longer knows the images; None otherwise or when none does."""
        served = self.slot.current
        drift = served.monitor.drift if served is not None else None
        if drift is None or not drift.state().alarm:
            return None
        dim = drift.reference.feature_dim
        rows = [i for i, k in enumerate(kept) if k.features.shape == (dim,)]
        if not rows:
            return None
        outlying = drift.reference.outlying(np.stack([kept[i].features for i in rows]))
        drifted = [rows[j] for j in np.flatnonzero(outlying)]
        return drifted or None

    async def _select(
        self,
        kept: list[KeptPrediction],
        strategy: SuggestStrategy,
        count: int,
        labeled: int,
        among: list[int] | None,
    ) -> tuple[list[int], np.ndarray]:
        """(indices into `kept` worth labeling, best first; a score per kept prediction),
        chosen among the `among` indices when given."""
        pool = [kept[i] for i in among] if among is not None else kept
        candidates = [Candidate(k.content, k.features, k.probabilities) for k in pool]
        if strategy == SuggestStrategy.BALANCED and comparable(candidates):
            order, pool_scores = await asyncio.to_thread(
                balanced_selection, candidates, count, labeled=labeled
            )
        else:
            pool_scores = np.array([k.uncertainty(strategy) for k in pool])
            order = await asyncio.to_thread(diverse_selection, candidates, pool_scores, count)
        if among is None:
            return list(order), pool_scores
        scores = np.zeros(len(kept))
        scores[among] = pool_scores
        return [among[i] for i in order], scores

    async def suggest(
        self, count: int, strategy: SuggestStrategy, served_version: str | None = None
    ) -> list[Suggestion]:
        """The kept predictions most worth labeling, never an image labeled already and no
        image twice, with their pixels; fewer than `count` when their images would not
        fit in one reply."""
        if not 1 <= count <= self.limits.max_suggestions:
            raise InvalidInput(
                f"count={count} is out of range; accepted 1..{self.limits.max_suggestions}"
            )
        await self.keeper.flush()
        # Candidates come without pixels; only the chosen ones are read whole. The served
        # version's own predictions are what counts; older versions' kept predictions
        # are used only when it has none yet.
        pool = BALANCED_POOL if strategy == SuggestStrategy.BALANCED else count * CANDIDATE_FACTOR
        kept = await asyncio.to_thread(
            self.store.unlabeled_predictions, strategy, pool, served_version, with_pixels=False
        )
        if not kept and served_version:
            kept = await asyncio.to_thread(
                self.store.unlabeled_predictions, strategy, pool, with_pixels=False
            )
        if not kept:
            return []
        labeled = 0
        if strategy == SuggestStrategy.BALANCED:
            labeled = sum(samples for samples, _, _ in (await self._label_counts()).values())
        drifted = self._drifted(kept)
        order, scores = await self._select(kept, strategy, count, labeled, drifted)
        if drifted is not None and len(order) < count:
            # Fewer drifted images than asked: the rest as usual, after them.
            rest = [i for i in range(len(kept)) if i not in set(drifted)]
            more, more_scores = await self._select(
                [kept[i] for i in rest], strategy, count - len(order), labeled, None
            )
            order += [rest[i] for i in more]
            scores[[rest[i] for i in more]] = more_scores[more]
        chosen = []
        budget = self.limits.suggestion_bytes
        for index in order:
            whole = await self.keeper.lookup(kept[index].prediction_id, self.store.model)
            if whole is None:
                continue  # pruned since it was listed
            # Raw pixels bound the PNG's size from above (plus a little framing).
            budget -= whole.pixels.nbytes + 1024
            if budget < 0:
                break
            chosen.append(Suggestion(whole, float(scores[index])))
        return chosen

    async def _label_counts(self) -> dict[str, tuple[int, int, int]]:
        return await asyncio.to_thread(self.store.label_counts, self.holdout_percent)

    async def training_status(self) -> TrainingStatus:
        return await asyncio.to_thread(TrainingStatus.of, self.store)

    async def request_training(self, reason: str) -> int:
        """Ask the trainer for a run now (it polls the store); returns the request id."""
        return await asyncio.to_thread(self.store.request_training, reason)

    async def live_accuracy(self, version: str) -> tuple[int, int]:
        return await asyncio.to_thread(self.store.live_accuracy, version)
