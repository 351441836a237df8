"""Champion/challenger experiments: start one, judge it on live labels, end it.

The model noun's capability for rollouts, beside the slots: `ModelSlot` loads the
challenger an experiment names and `PredictionService` routes and scores with it; this
module owns the experiment's life. The document lives in the registry
(`registry/experiment.py`, compare-and-set), so the trainer, an admin on any replica and
every replica's judge agree on one experiment; two replicas deciding at once both try the
same compare-and-set and one of them wins.

Judging: every poll, the labeled pairs of a running experiment (predictions both heads
scored, labeled by id: `FeedbackStore.experiment_pairs`) are replayed through the
sequential paired test (`monitoring/sequential.py`). A promotion moves CURRENT to the
challenger by compare-and-set from the champion (the slot then swaps in the challenger it
already has loaded); an abandonment leaves CURRENT alone. Past its deadline or its label
bound, a running experiment is abandoned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tlserve.server.errors import Conflict, InvalidInput, NotFound, TlserveError
from tlserve.server.model_slot import ModelSlot
from tlserve.server.models import ModelSet
from tlserve.server.monitoring.sequential import Decision, Evidence, PairedSequentialTest
from tlserve.server.registry import Registry
from tlserve.server.registry.experiment import (
    Experiment,
    ExperimentState,
    check_rollout,
)
from tlserve.server.store.base import FeedbackStore

log = logging.getLogger(__name__)

JUDGE = "judge"  # who ended an experiment the paired test decided


@dataclass(frozen=True, slots=True)
class ExperimentLimits:
    """What a started experiment is held to unless its starter says otherwise."""

    max_labels: int = 5000
    max_hours: float = 168.0
    alpha: float = 0.05


@dataclass(frozen=True, slots=True)
class ExperimentReport:
    """A model's experiment (running, or how the last ended) with its evidence so far."""

    experiment: Experiment
    evidence: Evidence | None


class Experiments:
    def __init__(
        self,
        models: ModelSet,
        store_of: Callable[[ModelSlot], FeedbackStore],
        limits: ExperimentLimits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.models = models
        self.limits = limits
        self._store_of = store_of
        self._clock = clock
        self._evidence: dict[str, tuple[str, Evidence]] = {}  # model -> (challenger, evidence)

    # ---- admin -----------------------------------------------------------------------

    async def start(
        self,
        slot: ModelSlot,
        challenger: str,
        mode: str,
        share: float,
        *,
        by: str,
        max_labels: int = 0,
        max_hours: float = 0.0,
    ) -> Experiment:
        """A new experiment of `challenger` against the served version; one still running
        is abandoned for it. Returns once this replica has the challenger loaded."""
        rollout = check_rollout(mode, share)
        if max_labels < 0 or max_hours < 0:
            raise InvalidInput("max_labels and max_hours are 0 (the server's limits) or more")
        champion = slot.require()
        if challenger == champion.version:
            raise InvalidInput(f"version {challenger} is the champion: it is already serving")
        manifest = await asyncio.to_thread(slot.registry.model_manifest, challenger)
        if manifest.backbone_id != champion.backbone.id:
            raise InvalidInput(
                f"version {challenger} runs on backbone {manifest.backbone_id[:12]}, the served "
                f"version {champion.version} on {champion.backbone.id[:12]}: a challenger "
                "scores the features the champion computed, so it must share its backbone "
                "(publish it directly, or roll back to compare)"
            )
        limits = ExperimentLimits(
            max_labels=max_labels or self.limits.max_labels,
            max_hours=max_hours or self.limits.max_hours,
            alpha=self.limits.alpha,
        )
        experiment = await asyncio.to_thread(
            propose_challenger,
            slot.registry,
            champion.version,
            challenger,
            rollout,
            share,
            by=by,
            limits=limits,
            now=self._clock(),
        )
        await slot.refresh()
        if slot.challenger is None or slot.challenger.version != challenger:
            raise InvalidInput(
                f"version {challenger} was refused as challenger; the server log says why"
            )
        log.warning("%s started %s of %s against %s", by, rollout, challenger, champion.version)
        return experiment

    async def end(self, slot: ModelSlot, outcome: str, *, by: str, reason: str = "") -> Experiment:
        """Promote the running experiment's challenger or abandon it, now."""
        outcomes = {"promote": ExperimentState.PROMOTED, "abandon": ExperimentState.ABANDONED}
        state = outcomes.get(outcome)
        if state is None:
            raise InvalidInput(f"outcome {outcome!r} is not known; accepted: promote, abandon")
        experiment, raw = await asyncio.to_thread(slot.registry.experiment)
        if experiment is None or not experiment.running:
            raise NotFound(f"model {slot.model_name!r} has no running experiment")
        evidence = await self._judge_evidence(slot, experiment)
        reason = reason or f"{outcome} by {by}"
        ended = await asyncio.to_thread(
            self._end, slot, experiment, raw, state, by, reason, evidence, True
        )
        await slot.refresh()
        return ended

    def running(self) -> list[tuple[str, ExperimentReport]]:
        """(model, report) of every running experiment (for metrics)."""
        reports = [(slot.model_name, self.report(slot)) for slot in self.models.slots()]
        return [(name, r) for name, r in reports if r is not None and r.experiment.running]

    def report(self, slot: ModelSlot) -> ExperimentReport | None:
        experiment = slot.experiment
        if experiment is None:
            return None
        known = self._evidence.get(slot.model_name)
        evidence = known[1] if known and known[0] == experiment.challenger else None
        return ExperimentReport(experiment, evidence)

    # ---- judging ---------------------------------------------------------------------

    async def judge_all(self) -> None:
        for slot in self.models.slots():
            experiment = slot.experiment
            if experiment is None or not experiment.running:
                continue
            try:
                await self.judge(slot, experiment)
            except TlserveError as exc:
                log.warning("model %s: experiment not judged this time: %s", slot.model_name, exc)

    async def judge(self, slot: ModelSlot, experiment: Experiment) -> None:
        evidence = await self._judge_evidence(slot, experiment)
        served = slot.current
        moved = served is not None and served.version != experiment.champion
        if moved and served is not None:
            # CURRENT moved under the experiment: a promotion whose document was not
            # written yet, a rollback, or a version published directly. It ends as that.
            promoted = served.version == experiment.challenger
            state = ExperimentState.PROMOTED if promoted else ExperimentState.ABANDONED
            reason = f"{slot.registry.pointer} moved to {served.version}"
        elif evidence.decision == Decision.RUNNING:
            return
        else:
            promoted = evidence.decision == Decision.PROMOTE
            state = ExperimentState.PROMOTED if promoted else ExperimentState.ABANDONED
            reason = evidence.reason
        current, raw = await asyncio.to_thread(slot.registry.experiment)
        if current != experiment:
            return  # changed meanwhile (another replica, an admin): judged next time
        try:
            await asyncio.to_thread(
                self._end, slot, experiment, raw, state, JUDGE, reason, evidence, not moved
            )
        except Conflict as exc:
            log.info("model %s: experiment decided elsewhere first: %s", slot.model_name, exc)
        await slot.refresh()

    async def watch(self, poll_seconds: float) -> None:
        """Judge running experiments forever (cancel the task to stop)."""
        while True:
            try:
                await self.judge_all()
            except Exception:
                log.exception("judging experiments failed; retrying in %.1fs", poll_seconds)
            await asyncio.sleep(poll_seconds)

    async def _judge_evidence(self, slot: ModelSlot, experiment: Experiment) -> Evidence:
        pairs = await asyncio.to_thread(
            self._store_of(slot).experiment_pairs, experiment.champion, experiment.challenger
        )
        test = PairedSequentialTest(alpha=experiment.alpha, max_labels=experiment.max_labels)
        for champion_right, challenger_right in pairs:
            test.add(champion_right, challenger_right)
        if self._clock() >= experiment.deadline:
            test.expire("the experiment's deadline passed without a decision")
        evidence = test.evidence()
        self._evidence[slot.model_name] = (experiment.challenger, evidence)
        return evidence

    def _end(
        self,
        slot: ModelSlot,
        experiment: Experiment,
        raw: bytes | None,
        state: ExperimentState,
        by: str,
        reason: str,
        evidence: Evidence,
        move_current: bool,
    ) -> Experiment:
        """CURRENT first (for a promotion, from the champion), then the document; a moved
        CURRENT or document is Conflict. Nothing is left half done: a promoted CURRENT
        whose document still says running is ended as promoted by the next judgement."""
        if state == ExperimentState.PROMOTED and move_current:
            slot.registry.set_current(experiment.challenger, expected=experiment.champion)
        ended = experiment.ended(state, by, reason)
        ended = Experiment(**{**asdict(ended), "evidence": _evidence_json(evidence)})
        if not slot.registry.replace_experiment(raw, ended):
            raise Conflict(f"model {slot.model_name!r}'s experiment changed meanwhile")
        log.warning(
            "model %s: experiment of %s against %s %s by %s: %s",
            slot.model_name,
            experiment.challenger,
            experiment.champion,
            state,
            by,
            reason,
        )
        return ended


def propose_challenger(
    registry: Registry,
    champion: str,
    challenger: str,
    rollout: str,
    share: float,
    *,
    by: str,
    limits: ExperimentLimits | None = None,
    now: float | None = None,
) -> Experiment:
    """Write a new experiment of `challenger` against `champion` (the trainer's path, and
    the admin's through `Experiments.start`); a running one it replaces is abandoned."""
    mode = check_rollout(rollout, share)
    limits = limits or ExperimentLimits()
    started = time.time() if now is None else now
    experiment = Experiment(
        champion=champion,
        challenger=challenger,
        mode=mode,
        share=share,
        started_at=started,
        started_by=by,
        max_labels=limits.max_labels,
        deadline=started + 3600 * limits.max_hours,
        alpha=limits.alpha,
    )
    previous, raw = registry.experiment()
    if previous is not None and previous.running:
        log.info("experiment of %s abandoned for %s", previous.challenger, challenger)
    if not registry.replace_experiment(raw, experiment):
        raise Conflict("the model's experiment changed meanwhile; try again")
    return experiment


def _evidence_json(evidence: Evidence) -> dict[str, object]:
    return {**asdict(evidence), "decision": str(evidence.decision)}
