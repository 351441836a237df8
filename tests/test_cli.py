"""The `tlserve` and `tlserve-server` commands, run as a user would run them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from examples.colour_model import publish_colour_version
from tests.support import ROOT, ServerProcess, ServerThread, solid_image, tlserve
from tlserve.clients import TlserveClient
from tlserve.server.main import _parser, _settings
from tlserve.server.registry import Registry


def test_predict_models_and_health(served: ServerThread, tmp_path: Path) -> None:
    red, blue = tmp_path / "red.png", tmp_path / "blue.jpg"
    red.write_bytes(solid_image("red"))
    blue.write_bytes(solid_image("blue", fmt="JPEG"))
    result = tlserve("predict", str(red), str(blue), "--top-k", "2", "--json", target=served.target)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model_version"] == served.registry.current()
    assert [p["top"][0]["label"] for p in report["predictions"]] == ["red", "blue"]
    plain = tlserve("predict", str(red), target=served.target)
    assert plain.returncode == 0 and f"{red}: red " in plain.stdout
    models = tlserve("models", target=served.target)
    assert models.returncode == 0 and f"* {served.registry.current()}" in models.stdout
    health = tlserve("health", target=served.target)
    assert health.returncode == 0 and health.stdout.strip() == "SERVING"


def test_errors_are_reported_not_raised(served: ServerThread, tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"junk")
    result = tlserve("predict", str(junk), target=served.target)
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr and "not a recognised image" in result.stderr
    missing = tlserve("predict", str(tmp_path / "nope.png"), target=served.target)
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_status_and_labels_as_text_and_json(served: ServerThread, tmp_path: Path) -> None:
    """`tlserve status` with no trainer yet: the served version, and what to start."""
    status = tlserve("status", target=served.target)
    assert status.returncode == 0, status.stderr
    assert f"serving: {served.registry.current()}" in status.stdout
    assert "trainer: unknown (stale)" in status.stdout and "tlserve-trainer run" in status.stdout
    document = json.loads(tlserve("status", "--json", target=served.target).stdout)
    assert document["served_version"] == served.registry.current()
    assert document["training"]["state"] == "unknown" and document["training"]["stale"]
    red = tmp_path / "red.png"
    red.write_bytes(solid_image("red"))
    first = tlserve("feedback", str(red), "--label", "red", target=served.target)
    assert first.returncode == 0 and "1 labels stored, 0 rejected" in first.stdout
    # The same file and label again: its idempotency key was stored; nothing new is.
    again = tlserve("feedback", str(red), "--label", "red", target=served.target)
    assert again.returncode == 0, again.stderr
    assert "0 labels stored, 1 stored before (sent again), 0 rejected" in again.stdout
    labels = json.loads(tlserve("labels", "--json", target=served.target).stdout)
    assert [(c["label"], c["samples"]) for c in labels["labels"]] == [("red", 1)]


def test_status_of_a_server_without_a_model(empty_server: ServerThread) -> None:
    status = tlserve("status", target=empty_server.target)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("serving: nothing yet")


def test_health_of_a_server_without_a_model(empty_server: ServerThread) -> None:
    result = tlserve("health", target=empty_server.target)
    assert result.returncode == 1 and result.stdout.strip() == "NOT_SERVING"


def test_server_process_serves_and_drains_on_sigterm(tmp_path: Path) -> None:
    """The real command on free ports for every listener (gRPC, HTTP, metrics): another
    tlserve on the defaults (8000, 9464, 50051) does not get in its way."""
    publish_colour_version(Registry.local(tmp_path / "registry"))
    with ServerProcess(tmp_path, log_level="INFO") as server:
        image = tmp_path / "green.png"
        image.write_bytes(solid_image("green"))
        assert "green" in tlserve("predict", str(image), target=server.target).stdout
        server.terminate()
        assert server.wait(30) == 0, server.output()
    assert "draining" in server.output()


def test_invalid_settings_exit_with_a_message(tmp_path: Path) -> None:
    env = {**os.environ, "TLSERVE_MAX_BATCH_SIZE": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "tlserve.server.main"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "max_batch_size" in result.stderr and "greater than or equal to 1" in result.stderr


def test_server_options_work_before_and_after_the_command() -> None:
    for argv in (["--port", "1234", "serve"], ["serve", "--port", "1234"], ["--port", "1234"]):
        assert _settings(_parser().parse_args(argv)).port == 1234


def test_suggest_then_feedback_by_csv(served: ServerThread, tmp_path: Path) -> None:
    """`tlserve suggest` writes images and a CSV; filled in, `feedback --csv` sends the
    labels back by prediction id (so they count as live feedback on the served version)."""
    with TlserveClient(served.target) as client:
        for colour in ("red", "green", "blue"):
            for size in ((24, 24), (20, 30)):
                client.predict_one(solid_image(colour, size=size))
    folder = tmp_path / "to-label"
    result = tlserve("suggest", str(folder), "--count", "3", target=served.target)
    assert result.returncode == 0, result.stderr
    sheet = folder / "labels.csv"
    rows = list(csv.DictReader(sheet.open()))
    assert len(rows) == 3 and all((folder / row["path"]).is_file() for row in rows)
    assert all(row["label"] == "" and row["prediction_id"] for row in rows)
    rows[0]["label"], rows[1]["label"] = "tomato", "sky"  # the third is left for later
    with sheet.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sent = tlserve("feedback", "--csv", str(sheet), target=served.target)
    assert sent.returncode == 0, sent.stderr
    assert "2 labels stored, 0 rejected" in sent.stdout
    with TlserveClient(served.target) as client:
        assert client.get_model().live_feedback_count == 2
