"""Label and text-field validation and the stable holdout split: the rules every store
applies alike."""

from __future__ import annotations

import unicodedata

from tlserve.server.errors import InvalidInput

MAX_LABEL_LENGTH = 128
# Control (Cc), format (Cf: bidi marks, zero-width joiners/spaces), surrogates (Cs),
# private use (Co), unassigned (Cn), line/paragraph separators (Zl, Zp).
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
# Ids and sources only need to be storable and loggable: no control characters (PostgreSQL's
# text cannot hold NUL at all) and no lone surrogates.
_PLAIN_TEXT_FORBIDDEN = {"Cc", "Cs"}


def _first_forbidden(value: str, categories: set[str]) -> tuple[int, str, str] | None:
    """(position, character, category) of the first character in `categories`."""
    for position, char in enumerate(value):
        category = unicodedata.category(char)
        if category in categories:
            return position, char, category
    return None


def normalize_label(raw: str) -> str:
    """NFC-normalised, trimmed label, or InvalidInput saying what is wrong with it."""
    label = unicodedata.normalize("NFC", raw).strip()
    if not label:
        what = "empty" if not raw else "only whitespace"
        raise InvalidInput(f"label is {what}; send 1 to {MAX_LABEL_LENGTH} visible characters")
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidInput(
            f"label is {len(label)} characters long; at most {MAX_LABEL_LENGTH} are accepted"
        )
    forbidden = _first_forbidden(label, _FORBIDDEN_CATEGORIES)
    if forbidden is not None:
        position, char, category = forbidden
        name = unicodedata.name(char, f"U+{ord(char):04X}")
        raise InvalidInput(
            f"label contains {name} (U+{ord(char):04X}, category {category}) at position "
            f"{position}; control, bidi, zero-width and unassigned characters are not accepted"
        )
    return label


def check_plain_text(field: str, value: str) -> None:
    """InvalidInput if an id or source field holds a control character or lone surrogate."""
    forbidden = _first_forbidden(value, _PLAIN_TEXT_FORBIDDEN)
    if forbidden is not None:
        raise InvalidInput(
            f"{field} holds a control character (U+{ord(forbidden[1]):04X}); send printable text"
        )


def in_holdout(sample_id: str, holdout_percent: float) -> bool:
    """Stable split from the content hash: a sample never changes side as data grows."""
    bucket = int(sample_id[:8], 16) % 10_000
    return bucket < holdout_percent * 100


def holdout_share(samples: int, hashed: int, min_class_samples: int) -> int:
    """How many of a class's `hashed` holdout samples it can spare for evaluation: none
    while it has fewer than `min_class_samples` labels (a small class trains on every one
    of them), and never so many that it keeps no training sample."""
    if samples < min_class_samples:
        return 0
    return max(0, min(hashed, samples - 1))
