"""Helpers every benchmark shares: a real server process on a free port, and the report."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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
    """`tlserve-server` on a free loopback port, quiet, without a metrics endpoint;
    `settings` become TLSERVE_* variables. Yields (target, process); terminated on exit."""
    port = free_port()
    env = {
        **os.environ,
        "TLSERVE_HOST": "127.0.0.1",
        "TLSERVE_PORT": str(port),
        "TLSERVE_METRICS_PORT": "none",
        "TLSERVE_LOG_LEVEL": "WARNING",
        **{f"TLSERVE_{name.upper()}": value for name, value in settings.items()},
    }
    process = subprocess.Popen([sys.executable, "-m", "tlserve.server.main"], cwd=ROOT, env=env)
    try:
        yield f"127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(30)


def write_report(report: dict[str, Any], output: Path) -> None:
    """Stamp the time and write the report where `--output` points (the results folder)."""
    report["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {output}")
