"""Crash-safe file writes (temp file + fsync + rename, then fsync the directory), an
exclusive lock on a file, and the start-up check that a folder can be written at all."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tlserve.server.errors import StartupError


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so readers see either the old or the new file, whole.

    `mode` is set explicitly: mkstemp creates 0600, which other users cannot read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def exclusive_lock(path: Path, mode: int = 0o644) -> Iterator[None]:
    """Holds an exclusive `flock` on `path` (created when missing): one holder at a time
    among every process and thread on this machine (each open is its own lock owner)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_and_sync(path: Path, data: bytes) -> None:
    """Write a new file inside a directory that is itself published atomically later."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def require_writable(folder: Path, setting: str) -> None:
    """Create `folder` if needed and prove a file can be made in it; otherwise StartupError
    naming the folder, this process's uid and the setting that placed it. A container's
    user meeting a volume owned by root fails here, at start, not on its first write."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise StartupError(
            f"{folder} is not writable by uid {os.geteuid()} ({exc.strerror}); mount a "
            f"volume this user may write there (a pod's fsGroup, `chown`) or set {setting}"
        ) from None
