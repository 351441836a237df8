"""Helpers every benchmark shares: a free loopback port and the JSON report."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_report(report: dict[str, Any], output: Path) -> None:
    """Stamp the time and write the report where `--output` points (the results folder)."""
    report["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {output}")
