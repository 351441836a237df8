"""A server running as a user who may not write where it is pointed, as a container's
uid meets a root-owned volume: it says what is wrong and which setting fixes it, instead
of dying on a traceback or answering INTERNAL, and it keeps serving what it can read.

As root, the server runs without the capabilities that let root write anywhere
(CAP_DAC_OVERRIDE and friends) on folders owned by `nobody`; as anyone else, the folders
are made read-only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from examples.colour_model import publish_colour_version
from tests.support import free_port, http_call, solid_image
from tlserve.clients import TlserveClient, errors
from tlserve.server.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
# Root as any container's uid is without these: it may write only what it owns.
WITHOUT_ROOT_POWERS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
ADMIN = "admin-token-for-unprivileged-tests"
AS_ROOT = os.geteuid() == 0


def _not_writable(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for path in [folder, *folder.rglob("*")]:
        if AS_ROOT:
            os.chown(path, NOBODY, NOBODY)
        elif path.is_dir():
            path.chmod(0o555)


def _server(
    env: dict[str, str], module: str = "tlserve.server.main", *args: str
) -> subprocess.Popen[str]:
    prefix = WITHOUT_ROOT_POWERS if AS_ROOT else []
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1", **env},
        text=True,
        stderr=subprocess.PIPE,
    )


def test_a_data_dir_the_server_cannot_write_stops_it_with_the_setting_to_change(
    tmp_path: Path,
) -> None:
    _not_writable(tmp_path / "volume")
    process = _server({"TLSERVE_DATA_DIR": str(tmp_path / "volume" / "data"), "TLSERVE_PORT": "0"})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert f"{tmp_path / 'volume' / 'data'}" in stderr
    assert "not writable" in stderr
    assert "TLSERVE_DATA_DIR" in stderr


def test_the_trainer_names_the_folder_and_setting_before_it_trains(tmp_path: Path) -> None:
    _not_writable(tmp_path / "registry")
    (tmp_path / "data").mkdir()
    process = _server(
        {
            "TLSERVE_DATA_DIR": str(tmp_path / "data"),
            "TLSERVE_REGISTRY_DIR": str(tmp_path / "registry"),
            "TLSERVE_BACKBONE_WEIGHTS": "none",
        },
        "tlserve.trainer.main",
        "once",
    )
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert f"{tmp_path / 'registry'} is not writable" in stderr
    assert "TLSERVE_REGISTRY_DIR" in stderr


def test_a_read_only_registry_serves_and_refuses_rollback_with_failed_precondition(
    tmp_path: Path,
) -> None:
    registry = Registry.local(tmp_path / "registry")
    first = publish_colour_version(registry)
    second = publish_colour_version(registry, parent=first)
    _not_writable(tmp_path / "registry")
    port, http_port = free_port(), free_port()
    process = _server(
        {
            "TLSERVE_DATA_DIR": str(tmp_path / "data"),
            "TLSERVE_REGISTRY_DIR": str(tmp_path / "registry"),
            "TLSERVE_PORT": str(port),
            "TLSERVE_HTTP_PORT": str(http_port),
            "TLSERVE_METRICS_PORT": "none",
            "TLSERVE_ADMIN_TOKENS": ADMIN,
            "TLSERVE_ANONYMOUS_ROLE": "predict",
        }
    )
    try:
        with TlserveClient(f"127.0.0.1:{port}", token=ADMIN, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    assert client.get_model().version == second
                    break
                except errors.ApiError:
                    assert process.poll() is None, process.communicate()[1]
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            answer = client.predict([solid_image("red")])
            assert (answer.model_version, answer.predictions[0].label) == (second, "red")
            with pytest.raises(errors.FailedPrecondition) as refused:
                client.rollback()
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "registry" in refused.value.message
            assert "not writable" in refused.value.message
            assert client.get_model().version == second
        reply = http_call(
            f"http://127.0.0.1:{http_port}/v1/rollback",
            method="POST",
            body=b"{}",
            headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        )
        assert reply.status == 503, reply.body
        assert "not writable" in reply.json()["error"]
        assert (tmp_path / "registry" / "CURRENT").read_text().strip() == second
    finally:
        process.terminate()
        process.communicate(timeout=30)
