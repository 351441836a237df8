"""Helpers every benchmark shares: a real server process on a free port, and the report."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server_process(**settings: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`tlserve-server` on free loopback ports (gRPC and HTTP), quiet, without a metrics
    endpoint, its data in a temporary folder unless `data_dir` is given; `settings` become
    TLSERVE_* variables. Yields (target, process); terminated on exit. Another tlserve on
    the default ports, or in the checkout's ./tlserve-data, is never touched."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tlserve-bench-") as scratch:
        env = {
            **os.environ,
            "TLSERVE_HOST": "127.0.0.1",
            "TLSERVE_PORT": str(port),
            "TLSERVE_HTTP_PORT": str(free_port()),
            "TLSERVE_METRICS_PORT": "none",
            "TLSERVE_DATA_DIR": scratch,
            "TLSERVE_LOG_LEVEL": "WARNING",
            **{f"TLSERVE_{name.upper()}": value for name, value in settings.items()},
        }
        process = subprocess.Popen([sys.executable, "-m", "tlserve.server.main"], cwd=ROOT, env=env)
        try:
            yield f"127.0.0.1:{port}", process
        finally:
            process.terminate()
            process.wait(30)


def _commit() -> str:
    git = ["git", "rev-parse", "--short", "HEAD"]
    return subprocess.run(git, cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()


def write_report(report: dict[str, Any], output: Path) -> None:
    """Stamp the time, the commit and the machine, and write the report where `--output`
    points (the results folder)."""
    report["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report.setdefault("commit", _commit())
    report.setdefault(
        "machine",
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {output}")
