"""Bearer tokens: several per role, from settings and from a file that may rotate.

Only SHA-256 digests are kept in memory, and a presented token is compared with every
configured digest in constant time, so neither the comparison nor the table's order
tells an attacker anything. Configured values may themselves be digests
(`sha256:<hex>`), so a tokens file need not hold a usable secret.

Tokens file, one credential per line (`#` starts a comment):

    # role    token or sha256:<hex>                                           name
    admin     sha256:4f0b0c...                                                ops
    label     a-long-random-labeling-token                                    labeling-app
    predict   another-long-random-token
    label@digits,odd-even  a-token-for-two-models-only                        digit-labelers

A role followed by `@` and model names (the default model by its name, `tlserve`
unless TLSERVE_MODEL_NAME says otherwise) limits the credential to those models; other
models answer PERMISSION_DENIED.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tlserve.server.registry.format import MODEL_NAME
from tlserve.server.security.errors import SecurityConfigError
from tlserve.server.security.roles import Role
from tlserve.server.security.watched import WatchedFile

log = logging.getLogger(__name__)

MIN_TOKEN_CHARACTERS = 16
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: what fits a header


class TokenConfigError(SecurityConfigError):
    """A configured token is unusable; the message says which and why, never the token."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    digest: bytes
    role: Role
    name: str
    models: frozenset[str] | None = None  # None: every model


def digest_of(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def configured_digest(value: str, where: str) -> bytes:
    """The digest of one configured credential: a token of at least 16 characters, or
    `sha256:<hex>` of one."""
    value = value.strip()
    if match := _DIGEST.match(value):
        return bytes.fromhex(match.group(1))
    if not _TOKEN.match(value):
        raise TokenConfigError(f"{where}: a token must be printable ASCII without spaces")
    if len(value) < MIN_TOKEN_CHARACTERS:
        raise TokenConfigError(
            f"{where}: a token must have at least {MIN_TOKEN_CHARACTERS} characters "
            "(e.g. `openssl rand -hex 24`), or be given as sha256:<64 hex digits>"
        )
    return digest_of(value)


def _entry(
    value: str,
    role: Role,
    name: str | None,
    where: str,
    models: frozenset[str] | None = None,
) -> TokenEntry:
    """Unnamed tokens are named by their role and digest prefix, never by the token."""
    digest = configured_digest(value, where)
    return TokenEntry(digest, role, name or f"{role.label}-{digest.hex()[:8]}", models)


def _scoped_role(field: str, where: str) -> tuple[Role, frozenset[str] | None]:
    """`label` (every model) or `label@digits,defects` (those models only)."""
    role, scoped, names = field.partition("@")
    if not scoped:
        return Role.parse(role, where), None
    models = frozenset(name.strip() for name in names.split(","))
    bad = sorted(name for name in models if not MODEL_NAME.match(name))
    if not models or bad:
        raise TokenConfigError(
            f"{where}: `{field}` must name models after `@`, comma-separated "
            f"(lower-case letters, digits, '-' and '_'); not {bad or 'nothing'}"
        )
    return Role.parse(role, where), models


def tokens_from_list(values: str, role: Role, setting: str) -> list[TokenEntry]:
    """A comma-separated setting."""
    return [
        _entry(value, role, None, f"{setting} entry {position}")
        for position, value in enumerate((v for v in values.split(",") if v.strip()), start=1)
    ]


def tokens_from_file(text: str, where: str) -> list[TokenEntry]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        at = f"{where} line {number}"
        if len(fields) not in (2, 3):
            raise TokenConfigError(
                f"{at}: expected `<role>[@model,...] <token or sha256:hex> [name]`"
            )
        role, models = _scoped_role(fields[0], at)
        name = fields[2] if len(fields) == 3 else None
        entries.append(_entry(fields[1], role, name, at, models))
    return entries


class TokenTable:
    """The configured tokens; the file's are re-read when it changes."""

    def __init__(
        self, fixed: Iterable[TokenEntry], file: Path | None = None, check_seconds: float = 5.0
    ) -> None:
        self._fixed = list(fixed)
        self._file = WatchedFile(file, check_seconds) if file is not None else None
        self._from_file = self._read_file() if self._file is not None else []

    def _read_file(self) -> list[TokenEntry]:
        assert self._file is not None
        return tokens_from_file(self._file.content.decode("utf-8", "replace"), "tokens file")

    @property
    def entries(self) -> list[TokenEntry]:
        if self._file is not None and self._file.changed():
            try:
                self._from_file = self._read_file()
                log.info("tokens file reloaded: %d credentials", len(self._from_file))
            except TokenConfigError as exc:
                log.error("tokens file change ignored, the previous tokens stay: %s", exc)
        return self._fixed + self._from_file

    def __bool__(self) -> bool:
        return bool(self.entries)

    def has_role(self, role: Role) -> bool:
        return any(entry.role >= role for entry in self.entries)

    def lookup(self, token: str) -> TokenEntry | None:
        """The entry whose digest matches, comparing with every entry (constant time)."""
        presented = digest_of(token)
        found = None
        for entry in self.entries:
            if hmac.compare_digest(presented, entry.digest):
                found = entry
        return found
