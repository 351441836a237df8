"""Every user error of the command lines is one line on stderr and a non-zero exit,
never a traceback: the issue's cases, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ServerThread, solid_image

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    argv: Callable[[Path, str], list[str]]  # (scratch folder, server target) -> argv
    code: int
    says: str  # in the one stderr line
    env: dict[str, str] | None = None


def _module(name: str) -> list[str]:
    return [sys.executable, "-m", name]


def tlserve(*args: str) -> Callable[[Path, str], list[str]]:
    return lambda folder, target: [
        *_module("tlserve.clients.cli"),
        "--target",
        target,
        *(arg.format(folder=folder) for arg in args),
    ]


CASES = {
    "predict --top-k -1": Case(
        tlserve("predict", "--top-k", "-1", "{folder}/one.png"), 2, "-1 is negative"
    ),
    "predict a missing file": Case(tlserve("predict", "{folder}/nope.png"), 2, "no such file"),
    "feedback a missing folder": Case(
        tlserve("feedback", "{folder}/nonexistdir/"), 2, "no such file or folder"
    ),
    "feedback one image without --label": Case(
        tlserve("feedback", "{folder}/one.png"), 2, "give its label with --label"
    ),
    "feedback --csv missing file": Case(
        tlserve("feedback", "--csv", "{folder}/missing.csv"), 2, "cannot read"
    ),
    "feedback --csv one-column row": Case(
        tlserve("feedback", "--csv", "{folder}/bad.csv"), 2, "line 2: expected path,label"
    ),
    "feedback --csv names a missing image": Case(
        tlserve("feedback", "--csv", "{folder}/gone.csv"), 2, "no such file"
    ),
    "suggest --count 0": Case(tlserve("suggest", "{folder}/s", "--count", "0"), 2, "at least 1"),
    "unknown command": Case(tlserve("teleport"), 2, "invalid choice"),
    "server --metrics-port nonsense": Case(
        lambda folder, target: [*_module("tlserve.server.main"), "--metrics-port", "nonsense"],
        2,
        "not a port number or `none`",
    ),
    "server port in use": Case(
        lambda folder, target: [
            *_module("tlserve.server.main"),
            "--port",
            target.rsplit(":", 1)[1],
            "--metrics-port",
            "none",
        ],
        1,
        "cannot listen on 127.0.0.1:",
        {"TLSERVE_HTTP_PORT": "none"},
    ),
    "server metrics port in use": Case(
        lambda folder, target: [
            *_module("tlserve.server.main"),
            "--port",
            "0",
            "--metrics-port",
            target.rsplit(":", 1)[1],
        ],
        1,
        "for metrics",
        {"TLSERVE_HTTP_PORT": "none"},
    ),
    "trainer export of an unknown version": Case(
        lambda folder, target: [
            *_module("tlserve.trainer.main"),
            "export",
            "20990101T000000Z-nothing",
            f"{folder}/x.onnx",
        ],
        1,
        "tlserve-trainer: error:",
    ),
    # It started, showed the previous run's error in `tlserve status`, and said what was
    # wrong only once a label arrived.
    "trainer run with a backbone file that is not there": Case(
        lambda folder, target: [*_module("tlserve.trainer.main"), "run"],
        1,
        "TLSERVE_BACKBONE names /missing.keras, which is not a file",
        {"TLSERVE_BACKBONE": "/missing.keras", "TLSERVE_METRICS_PORT": "none"},
    ),
    "trainer run with an unknown backbone": Case(
        lambda folder, target: [*_module("tlserve.trainer.main"), "run"],
        1,
        "unknown backbone 'MobileNetV9'",
        {"TLSERVE_BACKBONE": "MobileNetV9", "TLSERVE_METRICS_PORT": "none"},
    ),
    "trainer once fails offline": Case(
        lambda folder, target: [*_module("tlserve.trainer.main"), "once"],
        1,
        "failed",
        {"TLSERVE_BACKBONE": "MobileNetV2", "TLSERVE_BACKBONE_WEIGHTS": "imagenet"},
    ),
}


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "one.png").write_bytes(solid_image("red"))
    (tmp_path / "bad.csv").write_text("path,label\nonly-one-column\n")
    (tmp_path / "gone.csv").write_text("path,label\nmissing.png,red\n")
    return tmp_path


@pytest.mark.slow  # the trainer cases import TensorFlow
@pytest.mark.parametrize("name", list(CASES))
def test_user_errors_are_one_line(
    name: str, scratch: Path, served: ServerThread, tmp_path: Path
) -> None:
    case = CASES[name]
    env = {**os.environ, "TLSERVE_DATA_DIR": str(tmp_path / "data"), **(case.env or {})}
    if name == "trainer once fails offline":
        # Two classes, so the run gets as far as the backbone's (offline) download.
        for label, colour in (("red", "red"), ("blue", "blue")):
            image = scratch / f"{label}.png"
            image.write_bytes(solid_image(colour))
            subprocess.run(
                [*tlserve("feedback", str(image), "--label", label)(scratch, served.target)],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
        env["TLSERVE_DATA_DIR"] = str(served.settings.data_dir)
        env["KERAS_HOME"] = str(tmp_path / "keras")  # no cached weights
    target = served.target
    if "metrics port in use" in name:
        target = f"127.0.0.1:{served.server.metrics_port}"  # type: ignore[union-attr]
    result = subprocess.run(
        case.argv(scratch, target),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=240,
        check=False,
    )
    assert result.returncode == case.code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    if name == "trainer once fails offline":  # the run's log lines precede the verdict
        assert case.says in result.stdout, result.stdout
        return
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert case.says in lines[0], lines[0]


def test_broken_pipe_is_quiet(served: ServerThread) -> None:
    """`tlserve models --json | head -1`: the reader is gone before the answer is written
    (closed here before the command has even started); no traceback, the shell's 141."""
    command = [*tlserve("models", "--json")(Path("."), served.target)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT) as p:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        errors = p.stderr.read().decode()
        code = p.wait(60)
    assert errors == "", errors
    assert code == 141


@pytest.mark.parametrize("module", ["tlserve.clients.cli", "tlserve.server.main"])
def test_version(module: str) -> None:
    result = subprocess.run(
        [*_module(module), "--version"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0 and result.stdout.startswith("tlserve 0."), result
