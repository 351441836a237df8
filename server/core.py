"""The protocol-free serving core: every use case of tlserve, for every protocol.

The gRPC services (tlserve.v1, KServe v2) and the HTTP adapter convert their requests
into these calls and the results back; none of them holds logic of its own, so a new
protocol is one new adapter file. Failures are domain exceptions (`errors.py`) that
each adapter maps to its status codes through one table (`api/status.py`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from tlserve.server.drain import Admission
from tlserve.server.errors import (
    InvalidInput,
    ModelRejected,
    NoModel,
    NotFound,
    TlserveError,
)
from tlserve.server.experiments import ExperimentReport, Experiments
from tlserve.server.feedback import (
    FeedbackInput,
    FeedbackService,
    ItemResult,
    LabelInfo,
    SuggestStrategy,
)
from tlserve.server.imaging import encode_png
from tlserve.server.model_slot import ModelSlot
from tlserve.server.models import ModelSet
from tlserve.server.monitoring.live import LiveReport
from tlserve.server.prediction import (
    ImageInput,
    LabelScore,
    PredictionService,
    PredictResult,
    check_pinned_version,
    top_labels,
)
from tlserve.server.registry import ModelManifest
from tlserve.server.security import AccessControl, Action, Presented, Principal, RateLimits, Role
from tlserve.server.store.base import StoredLabel
from tlserve.server.training_status import TrainingStatus

log = logging.getLogger(__name__)

SUGGESTION_TOP_LABELS = 5
MAX_TRAINING_REASON = 200


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A registry version as clients see it, with how it is doing live."""

    model: str
    manifest: ModelManifest
    serving: bool
    providers: tuple[str, ...]
    live_correct: int
    live_total: int
    # The served version's only: what the trainer does next.
    training: TrainingStatus | None = None
    # The served version's only: its accuracy estimate and drift state on live traffic.
    monitoring: LiveReport | None = None
    # The served version's only: the model's experiment (running, or the last one).
    experiment: ExperimentReport | None = None

    @property
    def live_accuracy(self) -> float:
        return self.live_correct / self.live_total if self.live_total else 0.0


@dataclass(frozen=True, slots=True)
class ModelListing:
    models: list[ModelInfo]
    current: str | None
    # Versions that cannot be read, with why (listed, not hidden, and never an error).
    unreadable: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class ServedSignature:
    """What a request must look like for the served version (KServe model metadata)."""

    model: str
    version: str
    height: int
    width: int
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServedModelState:
    """A model this server serves: its name, served version ("" before the first one)."""

    name: str
    version: str
    is_default: bool


@dataclass(frozen=True, slots=True)
class LabelSuggestion:
    prediction_id: str
    uncertainty: float
    model_version: str
    top: tuple[LabelScore, ...]
    image_png: bytes


@dataclass(frozen=True, slots=True)
class LabelOverview:
    labels: list[LabelInfo]
    # Samples whose labelers disagree: in no label's count, training none.
    conflicting_samples: int = 0
    # Samples whose current label was given at or after the time asked (when asked).
    added: int | None = None


@dataclass(frozen=True, slots=True)
class Retraction:
    sample_id: str
    label: str


@dataclass(frozen=True, slots=True)
class Rollback:
    previous_version: str
    current_version: str


class ServingCore:
    """tlserve's use cases, free of any protocol.

    Every use case but the probes takes the caller's `Presented` credentials first and
    checks its role (and rate limit) before doing anything else."""

    def __init__(
        self,
        predictions: PredictionService,
        feedback_for: Callable[[ModelSlot], FeedbackService],
        models: ModelSet,
        access: AccessControl,
        limits: RateLimits,
        admission: Admission,
        experiments: Experiments,
    ) -> None:
        self.predictions = predictions
        self.experiments = experiments
        self._new_feedback = feedback_for
        self._feedback: dict[str, FeedbackService] = {}
        self.models = models
        self.access = access
        self.limits = limits
        # Closed when shutdown begins: readiness turns false before the listeners close.
        self.admission = admission

    def feedback(self, model: str = "") -> FeedbackService:
        """The feedback service of the model a request names (labels, suggestions,
        training requests and status are each model's own)."""
        slot = self.models.get(model)
        service = self._feedback.get(slot.model_name)
        if service is None or service.slot is not slot:  # new, or removed and back
            service = self._feedback[slot.model_name] = self._new_feedback(slot)
        return service

    def identify(self, caller: Presented) -> Principal:
        """The caller's principal, checked before an adapter reads a request's body:
        Unauthenticated for a bad credential, or none where anonymous callers have no
        role. The role a call needs is still checked by the call."""
        return self.access.identify(caller)

    def _admit(self, caller: Presented, role: Role, model: str | None = None) -> Principal:
        """The caller's principal, once the server still takes work, the role allows it
        and, for a call about `model` ('' : the default model), its credential covers
        that model. Requests that arrive once the drain began are UNAVAILABLE, which
        clients retry (on another replica); the ones already admitted finish, and the
        drain waits for them. The caller is authenticated before the model's name is
        looked up, so an anonymous caller cannot probe which models exist."""
        self.admission.admit()
        principal = self.access.require(caller, role)
        if model is not None:
            self.access.check_model(principal, self.model_name(model))
        return principal

    # ---- predictions ---------------------------------------------------------------

    async def predict(
        self,
        caller: Presented,
        images: Sequence[ImageInput],
        top_k: int = 0,
        *,
        keep: bool = True,
        version: str = "",
        model: str = "",
        routing_key: str = "",
    ) -> PredictResult:
        principal = self._admit(caller, Role.PREDICT, model)
        self.limits.take(principal.name, Action.PREDICT, len(images), self.model_name(model))
        try:
            return await self.predictions.predict(
                images,
                top_k,
                keep=keep,
                version=version,
                model=model,
                routing_key=routing_key or principal.name,
            )
        except NoModel as exc:
            raise await self._explained(exc, model=model) from None

    async def _explained(self, exc: NoModel, advice: str = "", *, model: str = "") -> NoModel:
        """NoModel that says what the model's trainer is doing or waiting for."""
        status = await self.feedback(model).training_status()
        return NoModel(f"{exc}{advice}. The trainer: {status.detail}")

    async def training_status(self, caller: Presented, model: str = "") -> TrainingStatus:
        """What the model's trainer is doing or waiting for, its last run, what starts the
        next."""
        self._admit(caller, Role.PREDICT, model)
        return await self.feedback(model).training_status()

    # ---- models --------------------------------------------------------------------

    @property
    def max_images(self) -> int:
        """Most images one request may carry; adapters check it before converting any."""
        return self.predictions.max_images_per_request

    def model_name(self, name: str = "") -> str:
        """The name of the model a request names (empty: the default model's); NotFound
        for a model this server does not serve."""
        return self.models.get(name).model_name

    def is_ready(self) -> bool:
        """Some model is served and the server takes work."""
        return not self.admission.closed and any(
            slot.current is not None for slot in self.models.slots()
        )

    async def is_model_ready(self, name: str, version: str = "") -> bool:
        """Ready means served now; a known but unserved version is not ready (NotFound if
        the registry has no such version)."""
        slot = self.models.get(name)
        served = slot.current
        if not version:
            return served is not None
        if served is not None and served.version == version:
            return True
        await asyncio.to_thread(slot.registry.model_manifest, version)
        return False

    def served_signature(self, caller: Presented, name: str, version: str = "") -> ServedSignature:
        self._admit(caller, Role.PREDICT, name)
        slot = self.models.get(name)
        with slot.lease() as model:
            check_pinned_version(version, model)
            spec = model.input_spec
            return ServedSignature(
                slot.model_name, model.version, spec.height, spec.width, model.labels
            )

    async def model_info(self, caller: Presented, version: str = "", model: str = "") -> ModelInfo:
        """A version (default: the served one) of a model (default: the default model)
        with its card and live accuracy."""
        self._admit(caller, Role.PREDICT, model)
        return await self._model_info(self.models.get(model), version)

    async def _model_info(self, slot: ModelSlot, version: str) -> ModelInfo:
        served = slot.current
        if not version:
            try:
                version = slot.require().version
            except NoModel as exc:
                raise await self._explained(exc, model=slot.model_name) from None
        training = monitoring = experiment = None
        if served is not None and served.version == version:
            manifest, serving, providers = served.manifest, True, tuple(served.providers)
            training = await self.feedback(slot.model_name).training_status()
            monitoring = served.monitor.report()
            experiment = self.experiments.report(slot)
        else:  # NotFound for an unknown or malformed id, before the store sees it
            manifest = await asyncio.to_thread(slot.registry.model_manifest, version)
            serving, providers = False, ()
        correct, total = await self.feedback(slot.model_name).live_accuracy(version)
        return ModelInfo(
            slot.model_name,
            manifest,
            serving,
            providers,
            correct,
            total,
            training,
            monitoring,
            experiment,
        )

    async def list_models(self, caller: Presented, model: str = "") -> ModelListing:
        """Every published version of a model (default: the default model), newest first;
        manifests and live accuracy are read concurrently."""
        self._admit(caller, Role.PREDICT, model)
        slot = self.models.get(model)
        versions = await asyncio.to_thread(slot.registry.versions)
        try:
            current = await asyncio.to_thread(slot.registry.current)
        except ModelRejected:
            current = None  # the model slot reports an unusable CURRENT (once per change)
        read = await asyncio.gather(
            *(self._model_info(slot, version) for version in versions), return_exceptions=True
        )
        models, unreadable = [], []
        for version, info in zip(versions, read, strict=True):
            if isinstance(info, ModelInfo):
                models.append(info)
            elif isinstance(info, ModelRejected):
                unreadable.append((version, str(info)))
            elif not isinstance(info, NotFound):  # NotFound: removed by retention meanwhile
                raise info
        return ModelListing(models, current, unreadable)

    def served_models(self, caller: Presented) -> list[ServedModelState]:
        """Every model this server serves that the caller may use, the default first: name,
        served version, state."""
        principal = self._admit(caller, Role.PREDICT)
        return [
            ServedModelState(
                name=slot.model_name,
                version=slot.current.version if slot.current is not None else "",
                is_default=slot is self.models.default,
            )
            for slot in self.models.slots()
            if principal.may_use(slot.model_name)
        ]

    async def rollback(self, caller: Presented, version: str, model: str = "") -> Rollback:
        """Admin: point a model's CURRENT at `version` (default: the served version's
        parent) and return once it is serving here; other replicas follow on their next
        poll."""
        principal = self._admit(caller, Role.ADMIN, model)
        slot = self.models.get(model)
        served = slot.require()
        target = version or served.manifest.parent
        if not target:
            raise InvalidInput(
                f"version {served.version} has no parent to roll back to; name a version"
            )
        if target == served.version:
            raise InvalidInput(f"version {target} is already serving")
        # Compare-and-set from what this replica serves: a rollback never overwrites a
        # version published in the meantime without having seen it.
        await asyncio.to_thread(slot.registry.set_current, target, expected=served.version)
        await slot.refresh()
        current = slot.require()
        if current.version != target:
            raise ModelRejected(
                f"version {target} was refused by verification and {current.version} is still "
                "serving; see the server log"
            )
        log.warning(
            "%s rolled model %s back from %s to %s",
            principal.name,
            slot.model_name,
            served.version,
            target,
        )
        return Rollback(served.version, current.version)

    async def start_experiment(
        self,
        caller: Presented,
        challenger: str,
        rollout: str,
        share: float,
        *,
        model: str = "",
        max_labels: int = 0,
        max_hours: float = 0.0,
    ) -> ExperimentReport:
        """Admin: judge `challenger` against the served version on live traffic."""
        principal = self._admit(caller, Role.ADMIN, model)
        if not challenger:
            raise InvalidInput("name the challenger: a published version of the model")
        slot = self.models.get(model)
        experiment = await self.experiments.start(
            slot,
            challenger,
            rollout,
            share,
            by=principal.name,
            max_labels=max_labels,
            max_hours=max_hours,
        )
        return ExperimentReport(experiment, None)

    async def end_experiment(
        self, caller: Presented, outcome: str, reason: str = "", *, model: str = ""
    ) -> ExperimentReport:
        """Admin: promote the running experiment's challenger, or abandon it, now."""
        principal = self._admit(caller, Role.ADMIN, model)
        slot = self.models.get(model)
        reason = reason.strip()[:MAX_TRAINING_REASON]
        ended = await self.experiments.end(slot, outcome, by=principal.name, reason=reason)
        return ExperimentReport(ended, None)

    async def trigger_training(self, caller: Presented, reason: str, model: str = "") -> int:
        """Admin: ask the model's trainer for a run now; returns the request id (the
        pending request's, when one is still waiting)."""
        principal = self._admit(caller, Role.ADMIN, model)
        self.limits.take(principal.name, Action.TRAINING, model=self.model_name(model))
        reason = reason.strip()[:MAX_TRAINING_REASON] or "TriggerTraining"
        return await self.feedback(model).request_training(f"{reason} ({principal.name})")

    async def approve_labels(
        self, caller: Presented, labels: Sequence[str], model: str = ""
    ) -> list[str]:
        """Admin: let these labels into the model's training (and into feedback, under
        `closed`)."""
        principal = self._admit(caller, Role.ADMIN, model)
        return await self.feedback(model).approve_labels(list(labels), principal.name)

    # ---- feedback ------------------------------------------------------------------

    async def submit_feedback(self, caller: Presented, item: FeedbackInput) -> StoredLabel:
        principal = self._admit(caller, Role.LABEL, item.model)
        self.limits.take(principal.name, Action.FEEDBACK, model=self.model_name(item.model))
        return await self.feedback(item.model).submit(item, principal.name)

    async def stream_feedback(
        self, caller: Presented, items: AsyncIterator[FeedbackInput | TlserveError]
    ) -> list[ItemResult]:
        """Each item is rate-limited on its own: items over the limit are reported as
        such (with a retry hint) and the rest of the stream goes on."""
        principal = self._admit(caller, Role.LABEL)

        async def submit(item: FeedbackInput) -> StoredLabel:
            self.access.check_model(principal, self.model_name(item.model))
            self.limits.take(principal.name, Action.FEEDBACK, model=self.model_name(item.model))
            return await self.feedback(item.model).submit(item, principal.name)

        return await self.feedback().submit_stream(items, submit)

    async def labels(
        self, caller: Presented, added_after: float | None = None, model: str = ""
    ) -> LabelOverview:
        """The model's label set with counts; with `added_after` (unix seconds), also how
        many samples got their current label since then (the labeling page's "today")."""
        self._admit(caller, Role.LABEL, model)
        feedback = self.feedback(model)
        if added_after is None:
            labels, conflicts = await asyncio.gather(feedback.labels(), feedback.conflicts())
            return LabelOverview(labels, conflicts)
        if not math.isfinite(added_after):
            raise InvalidInput(f"added_after must be a time in unix seconds, got {added_after}")
        labels, conflicts, added = await asyncio.gather(
            feedback.labels(), feedback.conflicts(), feedback.labels_added_since(added_after)
        )
        return LabelOverview(labels, conflicts, added)

    async def retract_label(self, caller: Presented, sample_id: str, model: str = "") -> Retraction:
        """Undo a sample's current label for a model: its labeler may, and an admin may
        undo anyone's."""
        principal = self._admit(caller, Role.LABEL, model)
        self.limits.take(principal.name, Action.FEEDBACK, model=self.model_name(model))
        label = await self.feedback(model).retract(
            sample_id, principal.name, any_principal=principal.role >= Role.ADMIN
        )
        log.info("%s retracted label %r of sample %s", principal.name, label, sample_id)
        return Retraction(sample_id, label)

    async def suggest(
        self,
        caller: Presented,
        count: int,
        strategy: SuggestStrategy,
        *,
        with_images: bool = True,
        model: str = "",
    ) -> list[LabelSuggestion]:
        """The model's kept predictions most worth labeling, best first, as PNGs unless
        omitted."""
        principal = self._admit(caller, Role.LABEL, model)
        self.limits.take(principal.name, Action.SUGGEST, 1, self.model_name(model))
        feedback = self.feedback(model)
        served = feedback.slot.current
        picked = await feedback.suggest(count, strategy, served.version if served else None)
        if not picked and served is None:
            raise await self._explained(
                NoModel("nothing to suggest yet: no model version is being served"),
                advice=(
                    ", so no predictions are kept to choose from; label images of at least two "
                    "classes with SubmitFeedback to start"
                ),
                model=model,
            )
        if with_images:
            pngs = await asyncio.gather(
                *(asyncio.to_thread(encode_png, s.prediction.pixels) for s in picked)
            )
        else:
            pngs = [b""] * len(picked)
        return [
            LabelSuggestion(
                prediction_id=s.prediction.prediction_id,
                uncertainty=s.uncertainty,
                model_version=s.prediction.model_version,
                top=top_labels(
                    s.prediction.probabilities, s.prediction.labels, SUGGESTION_TOP_LABELS
                ),
                image_png=png,
            )
            for s, png in zip(picked, pngs, strict=True)
        ]
