"""Portable data sets: export the store's labeled samples to a folder or tar, import them back.

Layout (also what `tlserve feedback` accepts as a CSV):

    images/<label>/<sample id>.<ext>
    labels.csv          path,label,source,created_at   (path relative to the folder)

Imports are idempotent (the key is the sample and label), so re-running one is safe,
and they go through the same validation as feedback over gRPC.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tlserve.server.errors import TlserveError
from tlserve.server.imaging import ImageLimits, check_image
from tlserve.server.store.base import FeedbackStore, sample_id_of
from tlserve.server.store.labels import normalize_label

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
_UNSAFE = re.compile(r"[^\w.-]+")


@dataclass
class ImportReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)


def export_data(store: FeedbackStore, target: Path) -> int:
    """Write every sample with its current label; `target` is a folder or a .tar/.tar.gz."""
    records = store.current_labels()
    as_tar = target.name.endswith((".tar", ".tar.gz", ".tgz"))
    folder = Path(tempfile.mkdtemp(prefix="tlserve-export-")) if as_tar else target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for start in range(0, len(records), 500):
            chunk = records[start : start + 500]
            images = store.images(r.sample_id for r in chunk)
            for record in chunk:
                data = images[record.sample_id]
                with Image.open(io.BytesIO(data)) as image:
                    extension = _EXTENSIONS.get(image.format or "", "bin")
                relative = Path("images") / _safe(record.label) / f"{record.sample_id}.{extension}"
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                (folder / relative).write_bytes(data)
                rows.append(
                    (
                        relative.as_posix(),
                        record.label,
                        record.source,
                        record.principal,
                        record.created_at,
                    )
                )
        with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "source", "principal", "created_at"])
            writer.writerows(rows)
        if as_tar:
            mode = "w:gz" if target.name.endswith(("gz", "tgz")) else "w"
            with tarfile.open(target, mode) as archive:
                archive.add(folder, arcname=".")
        return len(rows)
    finally:
        if as_tar:
            shutil.rmtree(folder, ignore_errors=True)


def _extract_checked(archive: tarfile.TarFile, target: Path) -> None:
    """Extract only regular files and folders that land inside `target`, on every Python
    3.11 (tarfile's own `data` filter, applied too where present, arrived in 3.11.4)."""
    root = target.resolve()
    for member in archive.getmembers():
        if not (member.isfile() or member.isdir()):
            raise ValueError(f"archive member {member.name!r} refused: not a file or folder")
        if member.name.startswith("/") or not (root / member.name).resolve().is_relative_to(root):
            raise ValueError(
                f"archive member {member.name!r} refused: it points outside the data set"
            )
    if hasattr(tarfile, "data_filter"):
        archive.extractall(target, filter="data")
    else:
        archive.extractall(target)


def import_data(store: FeedbackStore, source: Path, limits: ImageLimits) -> ImportReport:
    """Load a folder or tar written by `export_data` (or any labels.csv of path,label).
    The operator runs it, so its labels are approved for training."""
    if source.is_file():
        with (
            tempfile.TemporaryDirectory(prefix="tlserve-import-") as scratch,
            tarfile.open(source) as archive,
        ):
            _extract_checked(archive, Path(scratch))
            return import_data(store, Path(scratch), limits)
    manifest = source / "labels.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} does not exist; expected a folder with labels.csv")
    report = ImportReport()
    imported: set[str] = set()
    with open(manifest, newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            where = f"labels.csv line {line}"
            try:
                path = (source / row["path"]).resolve()
                if not path.is_relative_to(source.resolve()):
                    raise ValueError(f"path {row['path']!r} points outside the data set")
                data = path.read_bytes()
                check_image(data, limits)
                label = normalize_label(row["label"])
                stored = store.add_label(
                    image=data,
                    label=label,
                    source=row.get("source") or "import",
                    # The operator runs the import: who labeled, as exported, is kept.
                    principal=row.get("principal") or "import-data",
                    idempotency_key=f"import:{sample_id_of(data)}:{label}",
                )
            except (TlserveError, OSError, ValueError, KeyError) as exc:
                report.rejected.append((where, str(exc)))
                continue
            if stored.duplicate:
                report.duplicates += 1
            else:
                report.accepted += 1
            imported.add(label)
    store.approve_labels(sorted(imported), "import-data")
    return report


def _safe(label: str) -> str:
    return _UNSAFE.sub("_", label).strip("._") or "label"
