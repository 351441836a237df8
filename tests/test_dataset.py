"""Moving data: `tlserve feedback` from folders and CSVs, export-data / import-data between
SQLite and PostgreSQL."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.support import (
    ServerThread,
    label_samples,
    postgres_or_skip,
    solid_image,
    tlserve,
)
from tlserve.clients import TlserveClient
from tlserve.server.dataset import export_data, import_data
from tlserve.server.imaging import ImageLimits
from tlserve.server.store.postgres import PostgresFeedbackStore
from tlserve.server.store.sqlite import SqliteFeedbackStore

ROOT = Path(__file__).resolve().parents[1]


def labeled_folder(root: Path) -> Path:
    for colour in ("red", "green", "blue"):
        (root / colour).mkdir(parents=True)
        for size in (10, 20):
            (root / colour / f"{size}.png").write_bytes(solid_image(colour, (size, size)))
    (root / "red" / "notes.txt").write_text("not an image, skipped by suffix")
    return root


def test_cli_uploads_a_folder_and_a_csv(served: ServerThread, tmp_path: Path) -> None:
    folder = labeled_folder(tmp_path / "photos")
    result = tlserve("feedback", str(folder), target=served.target)
    assert result.returncode == 0, result.stderr
    assert "6 labels stored, 0 rejected" in result.stdout and "6/6" in result.stderr
    again = tlserve("feedback", str(folder), target=served.target)
    assert again.returncode == 0, again.stderr
    assert "0 labels stored, 6 stored before (sent again), 0 rejected" in again.stdout
    (tmp_path / "broken.png").write_bytes(b"junk")
    csv_file = tmp_path / "more.csv"
    csv_file.write_text("path,label\nphotos/red/10.png,crimson\nbroken.png,red\n")
    result = tlserve("feedback", "--csv", str(csv_file), target=served.target)
    assert result.returncode == 1
    assert "1 labels stored, 1 rejected" in result.stdout
    assert "broken.png: INVALID_ARGUMENT" in result.stderr
    with TlserveClient(served.target) as client:
        assert label_samples(client.list_labels()) == {
            "blue": 2,
            "crimson": 1,
            "green": 2,
            "red": 1,
        }
    listing = tlserve("labels", target=served.target)
    assert "6 samples in all" in listing.stdout
    assert "approved     crimson" in listing.stdout  # loopback: new labels are let in


def test_export_from_sqlite_and_import_into_postgres(tmp_path: Path) -> None:
    dsn = postgres_or_skip()
    sqlite = SqliteFeedbackStore(tmp_path / "feedback.sqlite3")
    for colour in ("red", "green", "blue"):
        sqlite.add_label(principal="test", image=solid_image(colour), label=colour, source="test")
    sqlite.add_label(
        principal="test", image=solid_image("red", (9, 9), "JPEG"), label="rouge", source="test"
    )
    archive = tmp_path / "data.tar.gz"
    assert export_data(sqlite, archive) == 4
    schema = f"test_{uuid.uuid4().hex[:12]}"
    postgres = PostgresFeedbackStore(dsn, schema=schema)
    try:
        limits = ImageLimits()
        report = import_data(postgres, archive, limits)
        assert (report.accepted, report.duplicates, report.rejected) == (4, 0, [])
        assert import_data(postgres, archive, limits).duplicates == 4
        exported = {(r.sample_id, r.label) for r in sqlite.current_labels()}
        assert {(r.sample_id, r.label) for r in postgres.current_labels()} == exported
    finally:
        postgres.close()
        sqlite.close()
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


def test_server_commands_export_and_import(tmp_path: Path) -> None:
    source = SqliteFeedbackStore(tmp_path / "a" / "feedback.sqlite3")
    source.add_label(principal="test", image=solid_image("blue"), label="blue", source="test")
    source.close()

    def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TLSERVE_DATA_DIR": str(data_dir)}
        return subprocess.run(
            [sys.executable, "-m", "tlserve.server.main", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    exported = run(tmp_path / "a", "export-data", str(tmp_path / "export"))
    assert exported.returncode == 0 and "exported 1 labeled samples" in exported.stdout
    assert (tmp_path / "export" / "labels.csv").read_text().splitlines()[0] == (
        "path,label,source,principal,created_at"
    )
    imported = run(tmp_path / "b", "import-data", str(tmp_path / "export"))
    assert imported.returncode == 0 and "imported 1 samples" in imported.stdout
    target = SqliteFeedbackStore(tmp_path / "b" / "feedback.sqlite3")
    assert [r.label for r in target.current_labels()] == ["blue"]
    target.close()


@pytest.mark.parametrize("member", ["../escape.txt", "/tmp/absolute.txt", "link"])
def test_an_archive_reaching_outside_is_refused(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "hostile.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    store = SqliteFeedbackStore(tmp_path / "feedback.sqlite3")
    try:
        with pytest.raises(ValueError, match="refused"):
            import_data(store, archive, ImageLimits())
    finally:
        store.close()
    assert not (tmp_path.parent / "escape.txt").exists()
