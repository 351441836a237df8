"""Counting top-level fields on the wire, before decoding a message.

A 20 MB Predict of four million one-byte images decodes into four million protobuf
messages (hundreds of MB) only to be refused for having too many; counting the field's
tags first refuses it with nothing allocated. The scan is one pass that stops as soon
as the message holds more top-level fields than a request of its kind can need (its
repeated fields' limits plus `OTHER_FIELDS`): 60 MB of two-byte unknown fields would
otherwise be 30 million steps of Python on the event loop. Only the top level is
scanned; a malformed message is left to the real decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
# Top-level fields a request may carry besides its limited repeated ones: its scalars
# and the entries of a parameters map.
OTHER_FIELDS = 64


@dataclass(frozen=True, slots=True)
class RepeatedLimit:
    """At most `limit` occurrences of field `number` (named `name` in refusals)."""

    number: int
    name: str
    limit: int


@dataclass(frozen=True, slots=True)
class WireCount:
    """What one scan saw: occurrences per limited field, and whether the message held
    more top-level fields than `max_fields` (the scan stopped there)."""

    counts: dict[int, int]
    max_fields: int
    too_many_fields: bool

    def over(self, limits: Sequence[RepeatedLimit]) -> RepeatedLimit | None:
        """The first limit the message exceeds, if any."""
        return next((lim for lim in limits if self.counts.get(lim.number, 0) > lim.limit), None)


def count_fields(data: bytes, limits: Sequence[RepeatedLimit]) -> WireCount:
    """Occurrences of every limited field, in at most `max_fields` + 1 steps."""
    max_fields = sum(limit.limit for limit in limits) + OTHER_FIELDS
    counts = dict.fromkeys((limit.number for limit in limits), 0)
    fields, offset, size = 0, 0, len(data)
    while offset < size:
        key, offset = _varint(data, offset)
        if offset < 0:
            break
        fields += 1
        if fields > max_fields:
            return WireCount(counts, max_fields, too_many_fields=True)
        field, wire_type = key >> 3, key & 7
        if field in counts:
            counts[field] += 1
        if wire_type == _VARINT:
            _, offset = _varint(data, offset)
        elif wire_type == _FIXED64:
            offset += 8
        elif wire_type == _LENGTH:
            length, offset = _varint(data, offset)
            offset += length
        elif wire_type == _FIXED32:
            offset += 4
        else:
            break  # groups or garbage: the decoder will say what is wrong
        if offset < 0:
            break
    return WireCount(counts, max_fields, too_many_fields=False)


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    """(value, next offset), or (0, -1) when the data ends inside the varint."""
    value, shift = 0, 0
    while offset < len(data) and shift < 64:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
    return 0, -1
