"""A file re-read when it changes, for credentials that rotate in place (Kubernetes
updates a mounted Secret by swapping a symlink, so the content is compared, not the
modification time alone)."""

from __future__ import annotations

import time
from pathlib import Path

from tlserve.server.security.errors import SecurityConfigError


class WatchedFile:
    """The bytes of `path`, looked at again at most every `check_seconds`."""

    def __init__(self, path: Path, check_seconds: float) -> None:
        self.path = path
        self.check_seconds = check_seconds
        try:
            self._content = path.read_bytes()
        except OSError as exc:
            raise SecurityConfigError(f"cannot read {path}: {exc.strerror}") from None
        self._checked_at = time.monotonic()

    @property
    def content(self) -> bytes:
        return self._content

    def changed(self) -> bool:
        """Re-read when due; True when the content differs from what was last seen.

        A file that cannot be read right now (mid-rotation) counts as unchanged."""
        now = time.monotonic()
        if now - self._checked_at < self.check_seconds:
            return False
        self._checked_at = now
        try:
            content = self.path.read_bytes()
        except OSError:
            return False
        if content == self._content:
            return False
        self._content = content
        return True
