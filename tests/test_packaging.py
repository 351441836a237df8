"""The distribution installs one import name, `tlserve`, and nothing at the top level
that could collide with another distribution (`server`, `clients`, `inference`, ...)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # builds a wheel


def test_the_wheel_holds_only_the_tlserve_namespace(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("tlserve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"tlserve", wheel.name.split("-py3")[0] + ".dist-info"}, top_level
    assert "tlserve/__init__.py" not in names  # an implicit namespace package
    licenses = [n for n in names if n.endswith("LICENSE") and ".dist-info/" in n]
    assert licenses, names
    assert b"Apache License" in zipfile.ZipFile(wheel).read(licenses[0])
    for module in (
        "tlserve/proto/classifier_pb2.py",
        "tlserve/proto/grpc_predict_v2_pb2_grpc.py",
        "tlserve/proto/tlserve/v1/classifier.proto",
        "tlserve/server/registry/local.py",
        "tlserve/server/api/http.py",
        "tlserve/server/security/access.py",
        "tlserve/server/selection.py",
        "tlserve/server/web/index.html",
        "tlserve/server/web/app.js",
        "tlserve/server/web/app.css",
        "tlserve/clients/calls.py",
        "tlserve/trainer/pipeline.py",
    ):
        assert module in names, module
