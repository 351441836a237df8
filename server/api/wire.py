"""Counting a repeated field on the wire, before decoding a message.

A 20 MB Predict of four million one-byte images decodes into four million protobuf
messages (hundreds of MB) only to be refused for having too many; counting the field's
tags first costs at most `limit` steps and refuses it with nothing allocated.
Only the top level is scanned; a malformed message is left to the real decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True, slots=True)
class RepeatedLimit:
    """At most `limit` occurrences of field `number` (named `name` in refusals)."""

    number: int
    name: str
    limit: int


def count_field(data: bytes, number: int, stop_after: int) -> int:
    """Occurrences of top-level field `number`, counting no further than `stop_after`."""
    count, offset, size = 0, 0, len(data)
    while offset < size:
        key, offset = _varint(data, offset)
        if offset < 0:
            break
        field, wire_type = key >> 3, key & 7
        if field == number:
            count += 1
            if count >= stop_after:
                break
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
    return count


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
