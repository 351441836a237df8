"""Crash safety: SIGKILL the server while a client submits feedback at full speed;
every acknowledged submission must survive, and the SQLite file must stay intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.support import free_port
from tlserve.clients import TlserveClient
from tlserve.server.store.sqlite import SqliteFeedbackStore

pytestmark = pytest.mark.slow  # SIGKILLs server processes under load

ROOT = Path(__file__).resolve().parents[1]


def start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TLSERVE_DATA_DIR": str(data_dir),
        "TLSERVE_HOST": "127.0.0.1",
        "TLSERVE_PORT": str(port),
        # Only gRPC is used: no HTTP listener, so another tlserve on 8000 is no matter.
        "TLSERVE_HTTP_PORT": "none",
        "TLSERVE_METRICS_PORT": "none",
        "TLSERVE_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "tlserve.server.main"], cwd=ROOT, env=env)


def test_acknowledged_feedback_survives_sigkill(tmp_path: Path) -> None:
    port = free_port()
    acknowledged: dict[str, str] = {}
    stop = threading.Event()
    counter = iter(range(10**9))

    def submit() -> None:
        with TlserveClient(f"127.0.0.1:{port}", timeout=5, retries=0) as client:
            while not stop.is_set():
                n = next(counter)
                pixels = np.full((8, 8, 3), (n % 251, n // 251 % 251, 9), dtype=np.uint8)
                label = f"class{n % 4}"
                try:
                    receipt = client.submit_feedback(label, image=pixels, idempotency_key=f"k{n}")
                except grpc.RpcError:
                    time.sleep(0.01)  # the server is down or restarting
                    continue
                acknowledged[receipt.sample_id] = receipt.label

    workers = [threading.Thread(target=submit) for _ in range(4)]
    process = start(tmp_path, port)
    for worker in workers:
        worker.start()
    try:
        for round_ in range(4):
            deadline = time.monotonic() + 60
            before = len(acknowledged)
            while len(acknowledged) < before + 40:
                assert time.monotonic() < deadline, "no progress after (re)start"
                time.sleep(0.01)
            time.sleep(0.05 * round_)
            process.send_signal(signal.SIGKILL)
            process.wait(30)
            process = start(tmp_path, port)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    store = SqliteFeedbackStore(tmp_path / "feedback.sqlite3")
    try:
        assert store.integrity_check() == "ok"
        stored = {record.sample_id: record.label for record in store.current_labels()}
        missing = {s: label for s, label in acknowledged.items() if stored.get(s) != label}
        assert missing == {}, f"{len(missing)} acknowledged submissions were lost"
        assert len(acknowledged) >= 160
    finally:
        store.close()
