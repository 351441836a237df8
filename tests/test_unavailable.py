"""A test whose service or tool is missing skips on a developer's machine and fails under
CI (`CI=true`), which has PostgreSQL, kubectl and chromium: a broken install never passes
as a skip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import pytest
from tests import support

def test_postgres():
    support.POSTGRES_DSN = "postgresql://nobody@127.0.0.1:1/none"
    support.postgres_or_skip()

def test_chromium():
    support.CHROMIUM = ""
    support.chromium_or_skip()

def test_kubectl(monkeypatch):
    monkeypatch.setattr(support.sys, "executable", "/nowhere/python")
    monkeypatch.setenv("PATH", "/nowhere")
    support.kubectl_or_skip()
"""


@pytest.mark.parametrize(("ci", "outcome"), [("true", "3 failed"), ("", "3 skipped")])
def test_missing_services_skip_here_and_fail_under_ci(
    tmp_path: Path, ci: str, outcome: str
) -> None:
    probe = tmp_path / "test_probe_missing.py"
    probe.write_text(PROBE)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
            str(probe),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "CI": ci, "HOME": str(tmp_path)},
        timeout=120,
        check=False,
    )
    assert outcome in result.stdout, result.stdout[-2000:]
    if ci:
        assert "CI=true: CI has it" in result.stdout
