"""Predictions: images in, scored labels out, every image of a request answered by the
one version of the named model it leased (and, when the caller pins a version, only by
that version).

Requests batch by backbone, not by model: images for different models (and versions) on
one resident backbone go through one backbone run together, then each head scores its
own rows. A head is a small matrix product; the backbone is where the time goes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from tlserve.server.batcher import DynamicBatcher
from tlserve.server.errors import InvalidInput, NotFound, TooLarge, quoted
from tlserve.server.imaging import ImageLimits, decode_image, prepare_pixels
from tlserve.server.keeper import PredictionKeeper
from tlserve.server.metrics import ServerMetrics
from tlserve.server.model_slot import BackboneRuntime, LoadedModel
from tlserve.server.models import ModelSet
from tlserve.server.registry.experiment import Experiment, Rollout
from tlserve.server.store.base import KeptPrediction


@dataclass(frozen=True, slots=True)
class ImageInput:
    """One image of a request: encoded bytes or a raw (H, W, 3) pixel array."""

    encoded: bytes | None = None
    pixels: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True, slots=True)
class ImagePrediction:
    prediction_id: str
    probabilities: np.ndarray
    top: tuple[LabelScore, ...]


@dataclass(frozen=True, slots=True)
class PredictResult:
    model: str
    version: str
    labels: tuple[str, ...]
    predictions: list[ImagePrediction]


_NO_SCORES = np.empty(0, np.float32)


@dataclass(frozen=True, slots=True)
class _Image:
    """One prepared image in a backbone batch, with the leased version whose head answers it
    and, during an experiment, the other version whose head scores it beside."""

    model: LoadedModel
    pixels: np.ndarray
    shadow: LoadedModel | None = None


@dataclass(frozen=True, slots=True)
class _Scored:
    features: np.ndarray
    probabilities: np.ndarray
    shadow_label: str = ""


class PredictionService:
    def __init__(
        self,
        models: ModelSet,
        metrics: ServerMetrics,
        decode_executor: Executor,
        inference_executor: Executor,
        *,
        limits: ImageLimits,
        max_images_per_request: int,
        default_top_k: int,
        max_batch_size: int,
        max_delay_seconds: float,
        max_queue_items: int,
        keeper: PredictionKeeper | None = None,
    ) -> None:
        self.models = models
        self.keeper = keeper
        self.metrics = metrics
        self.limits = limits
        self.max_images_per_request = max_images_per_request
        self.default_top_k = default_top_k
        self._decode_executor = decode_executor
        self.batcher: DynamicBatcher[BackboneRuntime, _Image, _Scored] = DynamicBatcher(
            self._run_batch,
            inference_executor,
            max_batch_size=max_batch_size,
            max_delay_seconds=max_delay_seconds,
            max_queue_items=max_queue_items,
            on_queue_wait=metrics.queue_wait_seconds.observe,
            on_batch=metrics.batch_size.observe,
            on_depth=metrics.queue_depth.set,
        )

    async def predict(
        self,
        images: Sequence[ImageInput],
        top_k: int = 0,
        *,
        keep: bool = True,
        version: str = "",
        model: str = "",
        routing_key: str = "",
    ) -> PredictResult:
        """Score every image with the named model's served version (`model` empty: the
        default model); all answered by that one version. During an experiment the
        challenger scores them too (shadow: a share of requests; canary: every request),
        and answers instead for the share of `routing_key`s a canary sends to it.

        A pinned `version` is checked under the same lease that answers, so a swap in
        between can only turn the answer into NotFound, never into another version's."""
        check_image_count(len(images), self.max_images_per_request)
        slot = self.models.get(model)
        with slot.lease() as champion, slot.lease_challenger() as challenger:
            served, shadow = _route(slot.experiment, champion, challenger, version, routing_key)
            check_pinned_version(version, served)
            k = self._resolve_top_k(top_k, served)
            pixels = await self._prepare_all(images, served)
            scored = await self.batcher.submit(
                served.backbone, [_Image(served, image, shadow) for image in pixels]
            )
        predictions = [
            ImagePrediction(
                prediction_id=uuid.uuid4().hex,
                probabilities=result.probabilities,
                top=top_labels(result.probabilities, served.labels, k),
            )
            for result in scored
        ]
        if self.keeper is not None and keep:
            now = time.time()
            self.keeper.keep(
                [
                    KeptPrediction(
                        prediction_id=prediction.prediction_id,
                        model_version=served.version,
                        backbone_id=served.backbone.id,
                        labels=served.labels,
                        probabilities=prediction.probabilities,
                        features=result.features,
                        pixels=image,
                        created_at=now,
                        model=slot.stored_as,
                        shadow_version=shadow.version if shadow else "",
                        shadow_label=result.shadow_label,
                    )
                    for prediction, result, image in zip(predictions, scored, pixels, strict=True)
                ]
            )
        return PredictResult(
            model=slot.model_name,
            version=served.version,
            labels=served.labels,
            predictions=predictions,
        )

    def _resolve_top_k(self, top_k: int, model: LoadedModel) -> int:
        """0: the default; more than the version has: all of them (the answer says how
        many there are)."""
        count = len(model.labels)
        if top_k < 0:
            raise InvalidInput(
                f"top_k={top_k} is out of range: accepted 1 or more (version {model.version} "
                f"has {count} labels), or 0 for the default ({min(self.default_top_k, count)})"
            )
        return min(top_k or self.default_top_k, count)

    async def _prepare_all(
        self, images: Sequence[ImageInput], model: LoadedModel
    ) -> list[np.ndarray]:
        spec = model.input_spec
        loop = asyncio.get_running_loop()

        def prepare(index: int, image: ImageInput) -> np.ndarray:
            started = time.perf_counter()
            try:
                if image.encoded is not None:
                    result = decode_image(image.encoded, spec, self.limits)
                elif image.pixels is not None:
                    result = prepare_pixels(image.pixels, spec, self.limits)
                else:
                    raise InvalidInput("an image has neither encoded bytes nor a pixel tensor")
            except (InvalidInput, TooLarge) as exc:
                reason = "too_large" if isinstance(exc, TooLarge) else "invalid"
                self.metrics.rejected_images.labels(reason=reason).inc()
                prefix = f"image {index}: " if len(images) > 1 else ""
                raise type(exc)(f"{prefix}{exc}") from None
            self.metrics.decode_seconds.observe(time.perf_counter() - started)
            return result

        # Raw pixels already at the model's size need no work worth a thread hop.
        if not any(
            image.encoded is not None
            or (image.pixels is not None and image.pixels.shape[:2] != (spec.height, spec.width))
            for image in images
        ):
            return [prepare(i, image) for i, image in enumerate(images)]
        return list(
            await asyncio.gather(
                *(
                    loop.run_in_executor(self._decode_executor, prepare, i, image)
                    for i, image in enumerate(images)
                )
            )
        )

    def _run_batch(self, backbone: BackboneRuntime, images: list[_Image]) -> list[_Scored]:
        batch = np.stack([image.pixels for image in images])
        started = time.perf_counter()
        features = backbone.features(batch)
        backbone_done = time.perf_counter()
        probabilities = [_NO_SCORES] * len(images)  # every row belongs to one model below
        rows_of: dict[int, tuple[LoadedModel, list[int]]] = {}
        for row, image in enumerate(images):
            rows_of.setdefault(id(image.model), (image.model, []))[1].append(row)
        for model, rows in rows_of.values():
            own = features[rows] if len(rows_of) > 1 else features
            scores = model.head_probabilities(own)
            model.monitor.observe(own, scores)
            for row, score in zip(rows, scores, strict=True):
                probabilities[row] = score
        shadow_labels = [""] * len(images)
        shadow_rows: dict[int, tuple[LoadedModel, list[int]]] = {}
        for row, image in enumerate(images):
            if image.shadow is not None:
                shadow_rows.setdefault(id(image.shadow), (image.shadow, []))[1].append(row)
        for model, rows in shadow_rows.values():
            scores = model.head_probabilities(features[rows])
            model.monitor.observe(features[rows], scores)
            for row, best in zip(rows, scores.argmax(axis=1).tolist(), strict=True):
                shadow_labels[row] = model.labels[best]
        self.metrics.inference_seconds.labels(stage="backbone").observe(backbone_done - started)
        self.metrics.inference_seconds.labels(stage="head").observe(
            time.perf_counter() - backbone_done
        )
        return [
            _Scored(f, p, s) for f, p, s in zip(features, probabilities, shadow_labels, strict=True)
        ]


def _route(
    experiment: Experiment | None,
    champion: LoadedModel,
    challenger: LoadedModel | None,
    pinned: str,
    routing_key: str,
) -> tuple[LoadedModel, LoadedModel | None]:
    """(the version that answers, the one that scores beside it or None) for one request.
    A pin to either side of a running experiment answers with that side."""
    if (
        challenger is None
        or experiment is None
        or not experiment.running
        or experiment.challenger != challenger.version
    ):
        return champion, None
    if pinned == challenger.version:
        return challenger, champion
    if pinned == champion.version:
        return champion, challenger
    if experiment.answers_with_challenger(routing_key):
        return challenger, champion
    if experiment.mode == Rollout.CANARY or experiment.scores_in_shadow(uuid.uuid4().hex):
        return champion, challenger
    return champion, None


def check_image_count(count: int, limit: int) -> None:
    """Adapters call this on the count a request declares, before converting any image."""
    if count == 0:
        raise InvalidInput("the request has no images; send at least one")
    if count > limit:
        raise TooLarge(f"the request has {count} images; at most {limit} are accepted per request")


def top_indices(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties keep label order."""
    return np.argsort(-probabilities, kind="stable")[:k]


def top_labels(probabilities: np.ndarray, labels: Sequence[str], k: int) -> tuple[LabelScore, ...]:
    return tuple(
        LabelScore(labels[i], float(probabilities[i])) for i in top_indices(probabilities, k)
    )


def check_pinned_version(version: str, model: LoadedModel) -> None:
    """A caller's version pin (empty: any) against the leased version."""
    if version and version != model.version:
        raise NotFound(
            f"model version {quoted(version, 128)} is not being served; the served version is "
            f"{model.version!r} (leave the version empty to use it)"
        )
