"""Which labels training may use: the new-class policy, shared by server and trainer.

A label the served model already has is `known`; one an admin approved is `approved`.
Any other label is new. Servers apply their policy as feedback arrives: `open` approves
it (as `policy:open`), `closed` refuses it unless approved, `quarantine` lets it wait.
The trainer admits known and approved labels, and new ones once `quorum` distinct
principals (labelers) gave them: one credential, however many images it sends, cannot
admit a class alone. A label that is not admitted simply waits: training goes on with
the others.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from tlserve.server.errors import InvalidInput, quoted


class NewClassPolicy(StrEnum):
    OPEN = "open"
    QUARANTINE = "quarantine"
    CLOSED = "closed"


class LabelStatus(StrEnum):
    KNOWN = "known"
    APPROVED = "approved"
    ADMITTED = "admitted"
    QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class ClassPolicy:
    policy: NewClassPolicy
    quorum: int

    def status(
        self, label: str, labelers: int, known: Collection[str], approved: Collection[str]
    ) -> tuple[LabelStatus, int]:
        """The label's status, given how many distinct principals gave it, and, when
        quarantined, how many more labelers it needs."""
        if label in known:
            return LabelStatus.KNOWN, 0
        if label in approved:
            return LabelStatus.APPROVED, 0
        if self.policy == NewClassPolicy.OPEN:
            return LabelStatus.ADMITTED, 0
        if self.policy == NewClassPolicy.QUARANTINE and labelers >= self.quorum:
            return LabelStatus.ADMITTED, 0
        needed = self.quorum - labelers if self.policy == NewClassPolicy.QUARANTINE else 0
        return LabelStatus.QUARANTINED, max(needed, 0)

    def admitted(
        self, labelers: dict[str, int], known: Collection[str], approved: Collection[str]
    ) -> set[str]:
        """The labels (of `labelers`: label -> distinct principals) training may use now."""
        return {
            label
            for label, count in labelers.items()
            if self.status(label, count, known, approved)[0] != LabelStatus.QUARANTINED
        }

    def check_submission(
        self, label: str, known: Collection[str], approved: Collection[str]
    ) -> None:
        """Under `closed`, feedback may only carry labels the model has or an admin approved."""
        if self.policy != NewClassPolicy.CLOSED or label in known or label in approved:
            return
        accepted = sorted({*known, *approved})
        raise InvalidInput(
            f"label {quoted(label)} is new, and this server accepts no new classes "
            f"(new_class_policy=closed); accepted labels: {', '.join(accepted[:50]) or 'none'}. "
            "An admin can approve a label with ApproveLabels"
        )
