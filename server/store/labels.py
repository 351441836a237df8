"""Label validation and the stable holdout split: the rules every store applies alike."""

from __future__ import annotations

import unicodedata

from tlserve.server.errors import InvalidInput

MAX_LABEL_LENGTH = 128
# Control (Cc), format (Cf: bidi marks, zero-width joiners/spaces), surrogates (Cs),
# private use (Co), unassigned (Cn), line/paragraph separators (Zl, Zp).
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


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
    for position, char in enumerate(label):
        category = unicodedata.category(char)
        if category in _FORBIDDEN_CATEGORIES:
            name = unicodedata.name(char, f"U+{ord(char):04X}")
            raise InvalidInput(
                f"label contains {name} (U+{ord(char):04X}, category {category}) at position "
                f"{position}; control, bidi, zero-width and unassigned characters are not accepted"
            )
    return label


def in_holdout(sample_id: str, holdout_percent: float) -> bool:
    """Stable split from the content hash: a sample never changes side as data grows."""
    bucket = int(sample_id[:8], 16) % 10_000
    return bucket < holdout_percent * 100
