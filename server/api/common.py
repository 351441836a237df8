"""What both adapters share beyond the status tables: when work leaves the event loop,
and how a request is named in logs and errors."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

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
