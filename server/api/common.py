"""What both adapters share beyond the status tables: when work leaves the event loop,
and how a request is named in logs and errors."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping
from typing import Any

from tlserve.server.experiments import ExperimentReport
from tlserve.server.monitoring.sequential import Evidence

# Messages and bodies larger than this are decoded in a worker thread, so parsing one
# never stalls the event loop that every other request shares.
OFF_LOOP_BYTES = 256 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def request_id_of(sent: object) -> str:
    """The caller's request id (`x-request-id`) when it is a short printable token, else
    a new one."""
    if isinstance(sent, str) and _REQUEST_ID.match(sent):
        return sent
    return uuid.uuid4().hex[:16]


def listing_card(card: Mapping[str, Any]) -> dict[str, Any]:
    """A model card as a listing of many versions shows it: without the per-epoch
    training history (about 10 KB a version), which GetModel of one version still has."""
    brief = dict(card)
    training = brief.get("training")
    if isinstance(training, Mapping) and "history" in training:
        brief["training"] = {**training, "history": "in GetModel"}
    return brief


def experiment_document(report: ExperimentReport) -> dict[str, Any]:
    """An experiment as both adapters show it (the same fields as the proto message): its
    live evidence while it runs, the evidence it ended on after."""
    experiment = report.experiment
    evidence: dict[str, Any] | None = None
    if report.evidence is not None:
        decision = str(report.evidence.decision)
        evidence = {**dataclasses.asdict(report.evidence), "decision": decision}
    elif experiment.evidence:
        evidence = {k: v for k, v in experiment.evidence.items() if k in _EVIDENCE_FIELDS}
    return {
        "champion_version": experiment.champion,
        "challenger_version": experiment.challenger,
        "rollout": str(experiment.mode),
        "share": experiment.share,
        "state": str(experiment.state),
        "reason": experiment.reason,
        "started_at": experiment.started_at,
        "started_by": experiment.started_by,
        "ended_at": experiment.ended_at,
        "ended_by": experiment.ended_by,
        "deadline": experiment.deadline,
        "max_labels": experiment.max_labels,
        "alpha": experiment.alpha,
        "evidence": evidence,
    }


_EVIDENCE_FIELDS = {field.name for field in dataclasses.fields(Evidence)}
