"""The README's benchmark tables, generated from the results the benchmarks wrote.

    python scripts/results_tables.py          # print every table
    python scripts/results_tables.py --write  # replace them in README.md

Each table sits in the README between `<!-- results:NAME:begin -->` and
`<!-- results:NAME:end -->` and is made from `benchmarks/results/NAME.json` alone, so a
figure in the README is the figure a run measured; a test fails when they drift apart.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def stress(report: dict[str, Any]) -> str:
    limit_mb = report["message_limit_bytes"] * 3 / 2**20
    lines = [
        f"Measured {report['measured_at'][:10]} at {report['commit']} on {report['machine']}.",
        "",
        "| request | answer | seconds | peak RSS growth (limit) | loop lag ≤ | target met |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in report["results"]:
        in_flight = row.get("in_flight", 1)
        limit = row.get("rss_limit_mb", limit_mb * in_flight)
        lines.append(
            f"| {_cell(row['case'])} | {_cell(row['answer'])} | {row['seconds']:.2f} "
            f"| {row['peak_rss_growth_mb']:.0f} MB ({limit:.0f}) "
            f"| {row['loop_lag_under_s'] * 1000:g} ms | {'yes' if row['passed'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {"stress": stress}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- results:{name}:begin -->", f"<!-- results:{name}:end -->"


def table(name: str) -> str:
    return TABLES[name](json.loads((RESULTS / f"{name}.json").read_text()))


def replace_in(text: str) -> str:
    for name in TABLES:
        begin, end = markers(name)
        start, stop = text.index(begin) + len(begin), text.index(end)
        text = text[:start] + "\n" + table(name) + text[stop:]
    return text


def main() -> int:
    readme = ROOT / "README.md"
    if "--write" in sys.argv:
        readme.write_text(replace_in(readme.read_text()))
        return 0
    for name in TABLES:
        print(table(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
