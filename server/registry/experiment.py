"""A model's champion/challenger experiment, as the registry keeps it.

One JSON document per model under the pointer `EXPERIMENT` (`EXPERIMENT.<model>` for a
named model), changed only by compare-and-set like CURRENT, so the trainer, an admin and
every server replica can start, decide or end it without a lock and without two of them
both winning. The document stays after the experiment ends, saying how it ended, until the
next one replaces it.

    running ──(the paired test promotes, or an admin does)──▶ promoted   CURRENT = challenger
       │
       └──(the test abandons it, its bound or deadline, an admin, a newer challenger)──▶ abandoned
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from tlserve.server.errors import InvalidInput, ModelRejected
from tlserve.server.registry.storage import PointerChanged, RegistryStorage

EXPERIMENT = "EXPERIMENT"
EXPERIMENT_FORMAT = "tlserve.experiment/v1"


class Rollout(StrEnum):
    DIRECT = "direct"  # a new version serves at once (no experiment)
    SHADOW = "shadow"  # the challenger scores a share of requests; the champion answers
    CANARY = "canary"  # a share of callers, sticky per caller, is answered by the challenger


class ExperimentState(StrEnum):
    RUNNING = "running"
    PROMOTED = "promoted"
    ABANDONED = "abandoned"


@dataclass(frozen=True, slots=True)
class Experiment:
    champion: str
    challenger: str
    mode: Rollout
    # shadow: the share of requests the challenger scores; canary: of callers it answers.
    share: float
    started_at: float
    started_by: str
    max_labels: int
    deadline: float  # epoch seconds; past it a running experiment is abandoned
    alpha: float
    state: ExperimentState = ExperimentState.RUNNING
    ended_at: float = 0.0
    ended_by: str = ""
    reason: str = ""
    # The paired evidence when it ended (or as last judged): counts, p values, interval.
    evidence: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.state == ExperimentState.RUNNING

    def ended(self, state: ExperimentState, by: str, reason: str) -> Experiment:
        return replace(self, state=state, ended_at=time.time(), ended_by=by, reason=reason)

    def answers_with_challenger(self, caller_key: str) -> bool:
        """Canary routing: the same caller lands on the same side for this experiment
        (hashing the key with the challenger), and `share` of callers on the challenger."""
        if self.mode != Rollout.CANARY:
            return False
        digest = hashlib.sha256(f"{self.challenger}\0{caller_key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share

    def scores_in_shadow(self, request_id: str) -> bool:
        """Shadow sampling: which requests the challenger scores (all of them at share 1)."""
        if self.mode != Rollout.SHADOW:
            return False
        if self.share >= 1.0:
            return True
        digest = hashlib.sha256(request_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share

    def to_json(self) -> dict[str, Any]:
        return {"format": EXPERIMENT_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any) -> Experiment:
        if not isinstance(data, dict) or data.get("format") != EXPERIMENT_FORMAT:
            raise ValueError(f"not a {EXPERIMENT_FORMAT} document")
        fields = {k: v for k, v in data.items() if k != "format"}
        return cls(
            **{
                **fields,
                "mode": Rollout(fields["mode"]),
                "state": ExperimentState(fields.get("state", ExperimentState.RUNNING)),
            }
        )


def check_rollout(mode: str, share: float) -> Rollout:
    """An experiment's mode and share, or InvalidInput saying what is accepted."""
    try:
        rollout = Rollout(mode)
    except ValueError:
        raise InvalidInput(
            f"rollout {mode!r} is not known; accepted: shadow, canary (direct needs no experiment)"
        ) from None
    if rollout == Rollout.DIRECT:
        raise InvalidInput("an experiment's rollout is shadow or canary; direct needs none")
    if not 0.0 < share <= 1.0 or (rollout == Rollout.CANARY and share >= 1.0):
        raise InvalidInput(
            f"share {share} is out of range: shadow takes (0, 1], canary (0, 1) "
            "(a canary answering every caller is a promotion)"
        )
    return rollout


class ExperimentPointer:
    """Reads and compare-and-sets one model's experiment document."""

    def __init__(self, storage: RegistryStorage, model: str | None) -> None:
        self.storage = storage
        self.name = EXPERIMENT if model is None else f"{EXPERIMENT}.{model}"

    def read(self) -> tuple[Experiment | None, bytes | None]:
        """The experiment and the bytes to compare-and-set against (None: never one)."""
        raw = self.storage.read_pointer(self.name)
        if raw is None:
            return None, None
        try:
            return Experiment.from_json(json.loads(raw)), raw
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelRejected(f"{self.name} is not a usable experiment document: {exc}") from None

    def replace(self, expected: bytes | None, experiment: Experiment) -> bool:
        """Write `experiment` if the pointer still holds `expected`; False if it moved."""
        value = json.dumps(experiment.to_json(), sort_keys=True).encode()
        try:
            self.storage.compare_and_set_pointer(self.name, expected, value)
        except PointerChanged:
            return False
        return True
