"""The registry on a local folder (or a shared volume mounted as one).

A group is published by writing it into a hidden `.tmp-*` folder, fsyncing every file
and folder, renaming it into place and fsyncing the parent: readers see all of it or
nothing. Pointers are replaced by temp file + fsync + rename under an exclusive
`flock`, which makes compare-and-set atomic for every writer on the same file system.
Every read resolves inside the root: a symlink pointing out of it reads as missing.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from tlserve.server.fsutil import atomic_write_bytes, exclusive_lock, fsync_dir, write_and_sync
from tlserve.server.registry.storage import (
    MissingObject,
    PointerChanged,
    RegistryStorage,
    WriteRefused,
    check_key,
)

# Everything this storage writes is for every process that serves from it, whatever its
# uid (a trainer pod and server pods often run as different users).
_FILE_MODE = 0o644
_DIR_MODE = 0o755
# A write refused by the file system itself rather than failing midway.
_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)

P = ParamSpec("P")
R = TypeVar("R")


def _writing(
    method: Callable[Concatenate[LocalFolderStorage, P], R],
) -> Callable[Concatenate[LocalFolderStorage, P], R]:
    """A refused write becomes WriteRefused naming the folder and this process's uid: the
    usual cause is a container user meeting a volume owned by someone else."""

    @functools.wraps(method)
    def wrapper(self: LocalFolderStorage, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            if exc.errno not in _REFUSED:
                raise
            raise WriteRefused(
                f"{self.describe()} is not writable by uid {os.geteuid()} "
                f"({exc.strerror}: {exc.filename})"
            ) from exc

    return wrapper


class LocalFolderStorage(RegistryStorage):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"folder {self.root}"

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key))
        try:
            inside = path.resolve(strict=True).is_relative_to(self.root.resolve(strict=True))
        except (FileNotFoundError, RuntimeError):  # missing, or a symlink loop
            raise MissingObject(key) from None
        if not inside:
            raise MissingObject(f"{key} resolves outside the registry")
        return path

    def read(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise MissingObject(key)
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except MissingObject:
            return False

    def list(self, prefix: str) -> list[str]:
        try:
            folder = self._path(prefix)
        except MissingObject:
            return []
        return [entry.name for entry in folder.iterdir() if not entry.name.startswith(".")]

    @_writing
    def publish(self, prefix: str, files: Mapping[str, bytes]) -> bool:
        *parents, name = check_key(prefix)
        parent = self.root.joinpath(*parents)
        target = parent / name
        if target.exists():
            return False
        parent.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
        try:
            folders = {staging}
            for relative, data in files.items():
                path = staging.joinpath(*check_key(relative))
                path.parent.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
                write_and_sync(path, data)
                path.chmod(_FILE_MODE)
                folders.add(path.parent)
            for folder in folders:
                folder.chmod(_DIR_MODE)
                fsync_dir(folder)
            try:
                os.rename(staging, target)
            except OSError:
                if target.exists():  # another writer published the same group first
                    shutil.rmtree(staging, ignore_errors=True)
                    return False
                raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(parent)
        return True

    @_writing
    def delete(self, prefix: str) -> None:
        *parents, name = check_key(prefix)
        parent = self.root.joinpath(*parents)
        target = parent / name
        if not target.exists():
            return
        # Renamed away first, so readers never see a half-deleted group.
        doomed = parent / f".del-{name}-{os.getpid()}"
        os.rename(target, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def read_pointer(self, name: str) -> bytes | None:
        try:
            return self.read(name)
        except MissingObject:
            return None

    @_writing
    def compare_and_set_pointer(self, name: str, expected: bytes | None, value: bytes) -> None:
        (segment,) = check_key(name)
        with self._locked(segment):
            current = self.read_pointer(segment)
            if current != expected:
                raise PointerChanged(f"{segment} changed since it was read")
            atomic_write_bytes(self.root / segment, value, mode=_FILE_MODE)

    @_writing
    def remove_partials(self) -> list[str]:
        removed = []
        for parent in [self.root, *(p for p in self.root.iterdir() if p.is_dir())]:
            for entry in parent.iterdir():
                if entry.is_dir() and entry.name.startswith((".tmp-", ".del-")):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(str(entry.relative_to(self.root)))
        return removed

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        with exclusive_lock(self.root / f".{name}.lock", _FILE_MODE):
            yield
