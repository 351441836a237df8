"""The feedback store interface and its records (SQLite and PostgreSQL implement it)."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

import numpy as np

from tlserve.server.store.labels import in_holdout

# The label a retraction stores (a real label is never empty): the sample's newest label
# is then none, so it leaves training and live accuracy; its history keeps both rows.
RETRACTED = ""
# The source of an admin's retraction that clears every label of a sample (a retraction
# row's label is RETRACTED, which no client can send, so no client can forge one).
CLEARED = "retract-all"


class SuggestStrategy(StrEnum):
    """How kept predictions are picked for labeling (tlserve.server.selection)."""

    # Typical samples first, then the margin, spread over clusters (the default).
    BALANCED = "balanced"
    LEAST_CONFIDENCE = "least_confidence"
    MARGIN = "margin"
    ENTROPY = "entropy"


@dataclass(frozen=True, slots=True)
class StoredLabel:
    sample_id: str
    label: str
    duplicate: bool
    previous_label: str | None


@dataclass(frozen=True, slots=True)
class LabelRecord:
    """A sample's current (latest) label; `seq` orders labels for trainer cursors."""

    seq: int
    sample_id: str
    label: str
    source: str
    created_at: float
    principal: str


@dataclass(frozen=True, slots=True)
class KeptPrediction:
    """A recent prediction, kept so feedback can name it and the trainer can reuse it."""

    prediction_id: str
    model_version: str
    backbone_id: str
    labels: tuple[str, ...]
    probabilities: np.ndarray
    features: np.ndarray
    pixels: np.ndarray
    created_at: float
    # content_id_of(pixels): the same image predicted twice has one content id. Filled in
    # when read back from a store (rows are read without pixels to pick suggestions).
    content_id: str = ""
    # The model that answered ('' : the default model); its store view reads it back.
    model: str = ""
    # During an experiment: the other head that scored it (its version and top label).
    shadow_version: str = ""
    shadow_label: str = ""

    @property
    def content(self) -> str:
        return self.content_id or content_id_of(self.pixels)

    @property
    def top_label(self) -> str:
        return self.labels[int(np.argmax(self.probabilities))]

    def uncertainty(self, strategy: SuggestStrategy) -> float:
        """Higher means more worth labeling."""
        p = np.sort(self.probabilities.astype(np.float64))[::-1]
        match SuggestStrategy(strategy):
            case SuggestStrategy.LEAST_CONFIDENCE:
                return float(1.0 - p[0])
            case SuggestStrategy.MARGIN | SuggestStrategy.BALANCED:
                return float(1.0 - (p[0] - p[1]))
            case SuggestStrategy.ENTROPY:
                nonzero = p[p > 0]
                return float(-(nonzero * np.log(nonzero)).sum() / np.log(len(p)))


def sample_id_of(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


def content_id_of(pixels: np.ndarray) -> str:
    """The identity of an image as a model input (decoded and resized the serving way): two
    predictions of the same image, or a label sent as a file and a prediction of it, share it."""
    digest = hashlib.sha256(repr(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels, dtype=np.uint8).data)
    return digest.hexdigest()


def payload_hash(sample_id: str, label: str, prediction_id: str | None, model: str = "") -> str:
    """What an idempotency key promises: this image, this label, this prediction, for this
    model (keys are unique across models: one reused for another model is another payload;
    the default model's hash is what it always was)."""
    text = f"{sample_id}\0{label}\0{prediction_id or ''}" + (f"\0{model}" if model else "")
    return hashlib.sha256(text.encode()).hexdigest()


class FeedbackStore(ABC):
    """Durable samples, label history, kept predictions and cached features.

    A store object reads and writes one model's labels, kept predictions, training
    requests, approvals and trainer status (the default model's, or `for_model(name)`'s);
    samples and features are shared by every model.

    Every write is committed before the method returns: acknowledging a write means
    it survives a crash. Methods are blocking; the server calls them from threads.
    """

    model: str  # whose data this object reads and writes ('' : the default model)

    @abstractmethod
    def add_label(
        self,
        *,
        image: bytes,
        label: str,
        source: str,
        principal: str,
        idempotency_key: str | None = None,
        prediction: KeptPrediction | None = None,
        content_id: str | None = None,
    ) -> StoredLabel:
        """Store the image (content-addressed) and `principal`'s label for it.

        Each principal holds its own label on a sample (its newest); the sample's current
        label is the one they all hold, and a sample whose labelers disagree is in
        conflict (`conflicting_samples`) and has none until one withdraws or an admin
        clears it. The result's `previous` is this principal's own earlier label: a
        labeler never learns another's.

        `principal` is who the server authenticated; `source` is what the client says.
        `content_id` identifies the image as the served model sees it (a prediction's own
        when labeled through one), so suggestions never offer an image labeled already.

        With a prediction, its version and answer are recorded for live accuracy and
        its features are cached for the prediction's backbone. A reused idempotency key
        returns the stored result (duplicate=True) or raises AlreadyExists when the
        payload differs. `label` must already be normalised.
        """

    @abstractmethod
    def retract_label(self, sample_id: str, principal: str, *, any_principal: bool = False) -> str:
        """Undo `principal`'s label on the sample (the labeling page's undo); returns it.
        Without one of its own: an admin (`any_principal`) clears every label of the
        sample (returning the newest); anyone else gets PermissionDenied when others hold
        labels, NotFound when nobody does."""

    @abstractmethod
    def conflicting_samples(
        self, *, principals: Sequence[str] = (), exclude_principals: Sequence[str] = ()
    ) -> int:
        """Samples whose labelers hold different labels (none of them trains), among the
        labels of `principals` (all if empty) and not of `exclude_principals`."""

    @abstractmethod
    def keep_predictions(self, predictions: Sequence[KeptPrediction]) -> None: ...

    @abstractmethod
    def prediction(self, prediction_id: str) -> KeptPrediction | None: ...

    @abstractmethod
    def prune_predictions(self, *, max_count: int, older_than: float) -> int:
        """Drop kept predictions beyond the newest `max_count` or created before `older_than`."""

    @abstractmethod
    def unlabeled_predictions(
        self,
        strategy: SuggestStrategy,
        limit: int,
        model_version: str | None = None,
        *,
        with_pixels: bool = True,
    ) -> list[KeptPrediction]:
        """Kept predictions nobody labeled yet, most uncertain first (of one version if
        given); without pixels (an empty image) unless asked, to pick among many cheaply."""

    @abstractmethod
    def current_labels(
        self,
        since_seq: int = 0,
        *,
        principals: Sequence[str] = (),
        exclude_principals: Sequence[str] = (),
    ) -> list[LabelRecord]:
        """Each sample's current label (the one all its labelers hold; the newest such row),
        for samples labeled (again) after `since_seq`; counting only labels by `principals`
        (all if empty) and not by `exclude_principals`."""

    @abstractmethod
    def approve_labels(self, labels: Sequence[str], principal: str) -> None:
        """Record that an admin let these labels into training."""

    @abstractmethod
    def approved_labels(self) -> set[str]: ...

    @abstractmethod
    def label_history(self, sample_id: str) -> list[LabelRecord]: ...

    @abstractmethod
    def last_label_seq(self) -> int: ...

    @abstractmethod
    def labels_added_since(self, created_at: float) -> int:
        """How many samples got their current label at or after `created_at` (unix time)."""

    @abstractmethod
    def labels_since(self, seq: int) -> int:
        """How many labels were added after `seq`."""

    @abstractmethod
    def request_training(self, reason: str) -> int:
        """Record an on-demand training request (TriggerTraining); returns its id, or the
        id of the request still pending, so repeated calls queue one run."""

    @abstractmethod
    def pending_training_requests(self) -> list[tuple[int, str]]: ...

    @abstractmethod
    def mark_training_requests(self, ids: Sequence[int], run_id: str) -> None: ...

    @abstractmethod
    def training_lock(self) -> AbstractContextManager[None]:
        """Held by the one trainer run allowed at a time, across processes and pods."""

    @abstractmethod
    def images(self, sample_ids: Iterable[str]) -> dict[str, bytes]: ...

    @abstractmethod
    def features(self, backbone_id: str, sample_ids: Iterable[str]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def put_features(self, backbone_id: str, vectors: Mapping[str, np.ndarray]) -> None: ...

    @abstractmethod
    def put_trainer_status(self, status: Mapping[str, Any]) -> None:
        """Replace what the trainer reports about itself (a JSON document)."""

    @abstractmethod
    def trainer_status(self) -> tuple[dict[str, Any], float] | None:
        """The trainer's last report and when it was stored, or None if it never reported."""

    @abstractmethod
    def experiment_pairs(self, champion: str, challenger: str) -> list[tuple[bool, bool]]:
        """(champion right, challenger right) for each labeled prediction both versions
        scored, in label order."""

    @abstractmethod
    def live_accuracy(self, model_version: str) -> tuple[int, int]:
        """(correct, total) answers of a version on predictions that got feedback; a
        prediction labeled twice counts once (its newest label), a retracted one not at all."""

    @abstractmethod
    def for_model(self, model: str) -> Self:
        """The same store for `model`'s data ('' is the default model); it shares this
        store's connections and is closed with it."""

    @abstractmethod
    def close(self) -> None: ...

    def label_counts(self, holdout_percent: float) -> dict[str, tuple[int, int, int]]:
        """label -> (samples, of which in holdout, distinct principals who gave it)."""
        counts: dict[str, list[int]] = {}
        labelers: dict[str, set[str]] = {}
        for record in self.current_labels():
            entry = counts.setdefault(record.label, [0, 0])
            entry[0] += 1
            entry[1] += in_holdout(record.sample_id, holdout_percent)
            labelers.setdefault(record.label, set()).add(record.principal)
        return {label: (n, h, len(labelers[label])) for label, (n, h) in sorted(counts.items())}
