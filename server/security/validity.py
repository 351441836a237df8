"""When a PEM certificate is valid, read from its DER encoding.

Python's ssl module loads a server certificate without saying when it expires, and the
server has no X.509 library among its dependencies; the validity period sits at a fixed
place in every certificate (RFC 5280 4.1: Certificate > TBSCertificate > [version],
serialNumber, signature, issuer, validity), so a few lines of DER read it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from dataclasses import dataclass

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)
_SEQUENCE, _VERSION, _UTC_TIME, _GENERALIZED_TIME = 0x30, 0xA0, 0x17, 0x18
# How soon before expiry the server starts warning.
EXPIRES_SOON = datetime.timedelta(days=7)


class NotACertificate(ValueError):
    """The bytes are not a DER certificate this reader understands."""


@dataclass(frozen=True, slots=True)
class Validity:
    not_before: datetime.datetime
    not_after: datetime.datetime

    def problem(self, now: datetime.datetime) -> str | None:
        """What a client would object to at `now`, or None."""
        if now > self.not_after:
            return f"expired on {self.not_after:%Y-%m-%d %H:%M} UTC"
        if now < self.not_before:
            return f"is not valid before {self.not_before:%Y-%m-%d %H:%M} UTC"
        if self.not_after - now < EXPIRES_SOON:
            return f"expires on {self.not_after:%Y-%m-%d %H:%M} UTC, in under 7 days"
        return None


def first_certificate_validity(pem: bytes) -> Validity:
    """The validity of the first certificate of a PEM chain (the server's own)."""
    found = _PEM.search(pem)
    if found is None:
        raise NotACertificate("no PEM certificate block")
    try:
        der = base64.b64decode(b"".join(found.group(1).split()), validate=True)
    except binascii.Error:
        raise NotACertificate("the PEM block is not base64") from None
    return validity_of(der)


def validity_of(der: bytes) -> Validity:
    try:
        certificate = _inside(der, 0, _SEQUENCE)
        offset = _inside(der, certificate, _SEQUENCE)  # TBSCertificate
        if der[offset] == _VERSION:
            offset = _skip(der, offset)
        for _ in range(3):  # serialNumber, signature, issuer
            offset = _skip(der, offset)
        offset = _inside(der, offset, _SEQUENCE)  # validity
        not_before, offset = _time(der, offset)
        not_after, _ = _time(der, offset)
    except (IndexError, ValueError) as exc:
        raise NotACertificate(f"unreadable DER ({exc})") from None
    return Validity(not_before, not_after)


def _header(der: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, where the content starts, where it ends)."""
    tag, length = der[offset], der[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[offset : offset + count], "big")
        offset += count
    if offset + length > len(der):
        raise ValueError("a length runs past the end")
    return tag, offset, offset + length


def _inside(der: bytes, offset: int, tag: int) -> int:
    found, start, _ = _header(der, offset)
    if found != tag:
        raise ValueError(f"tag {found:#x} where {tag:#x} belongs")
    return start


def _skip(der: bytes, offset: int) -> int:
    return _header(der, offset)[2]


def _time(der: bytes, offset: int) -> tuple[datetime.datetime, int]:
    tag, start, end = _header(der, offset)
    text = der[start:end].decode("ascii")
    if tag == _UTC_TIME:  # YYMMDDHHMMSSZ; RFC 5280: YY < 50 is 20YY
        year = int(text[:2])
        text = f"{2000 + year if year < 50 else 1900 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME:
        raise ValueError(f"tag {tag:#x} where a time belongs")
    moment = datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ")
    return moment.replace(tzinfo=datetime.UTC), end
