"""The storage seam under the registry format: bytes under keys, atomic publication,
and one compare-and-set pointer.

Keys are slash-separated names such as `versions/<id>/head.onnx`; no filesystem path
crosses this interface, so the format above it (manifests, hashes, CURRENT's meaning,
retention) is the same on a local folder and on object storage.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping

_SEGMENT = re.compile(r"^[0-9A-Za-z_][0-9A-Za-z._-]{0,127}$")


class StorageError(Exception):
    """Base of the storage layer's errors; the registry turns them into domain errors."""


class MissingObject(StorageError):
    """No object under the key (or it is not a plain object inside the storage)."""


class WriteRefused(StorageError):
    """This process may not write to the storage: folder permissions, a read-only mount or
    a bucket policy. A deployment fault that no retry fixes; the message says where."""


class PointerChanged(StorageError):
    """A compare-and-set lost: the pointer no longer holds the expected value."""


def check_key(key: str) -> list[str]:
    """The key's segments; refuses empty, hidden, `..` and over-long segments."""
    segments = key.split("/")
    if not key or not all(_SEGMENT.match(s) for s in segments):
        raise MissingObject(f"{key[:80]!r} is not a valid registry key")
    return segments


class RegistryStorage(ABC):
    """What the registry format needs from where its bytes live."""

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The object's bytes; MissingObject when there is none."""

    def read_content(self, key: str, sha256: str) -> bytes:
        """`read`, for a file whose sha256 the caller knows (and checks): object storage
        serves it from a local cache by that hash; a folder needs none."""
        return self.read(key)

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under the key."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Names of the published groups directly under `prefix` (unordered)."""

    @abstractmethod
    def publish(self, prefix: str, files: Mapping[str, bytes]) -> bool:
        """Make `prefix/<name>` of every file appear at once, or none of them.

        Returns False, writing nothing, when `prefix` was already published (groups are
        immutable: the same prefix always names the same content)."""

    @abstractmethod
    def delete(self, prefix: str) -> None:
        """Remove a published group; a missing one is not an error."""

    @abstractmethod
    def read_pointer(self, name: str) -> bytes | None:
        """The pointer's value, or None before it was first set."""

    @abstractmethod
    def compare_and_set_pointer(self, name: str, expected: bytes | None, value: bytes) -> None:
        """Set the pointer to `value` if it still holds `expected` (None: unset), atomically
        with respect to every other writer; PointerChanged otherwise."""

    @abstractmethod
    def remove_partials(self) -> list[str]:
        """Clear what a crashed publication left behind; returns what was removed."""

    @abstractmethod
    def describe(self) -> str:
        """Where the registry lives, for operators' logs (never for client-facing errors)."""
