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
        "| request | answer | seconds | peak RSS growth (limit) | store growth | loop lag ≤ "
        "| target met |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in report["results"]:
        in_flight = row.get("in_flight", 1)
        limit = row.get("rss_limit_mb", limit_mb * in_flight)
        lines.append(
            f"| {_cell(row['case'])} | {_cell(row['answer'])} | {row['seconds']:.2f} "
            f"| {row['peak_rss_growth_mb']:.0f} MB ({limit:.0f}) "
            f"| {row['store_growth_kb']:,.0f} KB "
            f"| {row['loop_lag_under_s'] * 1000:g} ms | {'yes' if row['passed'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def _measured(report: dict[str, Any]) -> str:
    machine = report["machine"]
    if isinstance(machine, dict):
        grpcio = f", grpcio {machine['grpcio']}" if "grpcio" in machine else ""
        machine = f"{machine['cpus']} cores, Python {machine['python']}{grpcio}"
    return f"Measured {report['measured_at'][:10]} at {report.get('commit', '?')} on {machine}."


def feedback(report: dict[str, Any]) -> str:
    lines = [
        _measured(report),
        "",
        "| store | 1 in flight | 8 in flight | one stream of 2000 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for store, rows in report["results"].items():
        lines.append(
            f"| {store} | {rows['single, 1 in flight']:.0f} | {rows['single, 8 in flight']:.0f} "
            f"| {rows['stream of 2000']:.0f} |"
        )
    limited = report.get("default_rate_limit")
    if limited:
        lines += [
            "",
            f"With the default limit (50 items/s per principal after a burst of 1,000), one "
            f"principal sending 8 at a time for {limited['seconds']:.0f} s had "
            f"{limited['single, 8 in flight']:.1f} submissions/s acknowledged and "
            f"{limited['refused']:,} refused with RESOURCE_EXHAUSTED.",
        ]
    return "\n".join(lines) + "\n"


def rollout(report: dict[str, Any]) -> str:
    lines = [
        _measured(report),
        "",
        "| measure | value | target |",
        "| --- | ---: | --- |",
    ]
    for name, target in report["targets"].items():
        lines.append(f"| `{name}` | {report[name]} | {_cell(target)} |")
    return "\n".join(lines) + "\n"


_F2S_ROWS = {
    "submit_100_labels_s": "send 100 labels (acknowledged)",
    "trainer_snapshot_s": "snapshot",
    "trainer_features_s": "features (new samples only)",
    "trainer_train_s": "train head",
    "trainer_export_s": "export + parity check",
    "trainer_evaluate_s": "evaluate (candidate and served)",
    "trainer_monitoring_s": "calibrate + drift sketch",
    "trainer_publish_s": "publish (atomic)",
    "feedback_to_serve_s": "**labels acknowledged → new version answering**",
}


def feedback_to_serve(report: dict[str, Any]) -> str:
    rows = report["results"]
    header = " | ".join(f"{r['configuration']}, {r['labeled_before']:,} labeled" for r in rows)
    lines = [
        _measured(report),
        "",
        f"| seconds | {header} |",
        "| --- |" + " ---: |" * len(rows),
    ]
    for key, name in _F2S_ROWS.items():
        if any(key in r for r in rows):
            cells = " | ".join(f"{r[key]:.2f}" if key in r else "" for r in rows)
            lines.append(f"| {name} | {cells} |")
    covered = " | ".join(f"{r['new_labels_in_it']:.0f}" for r in rows)
    lines.append(f"| of the 100 labels, in the version answering | {covered} |")
    return "\n".join(lines) + "\n"


def serving(report: dict[str, Any]) -> str:
    machine = report["machine"]
    by_batch = ", ".join(
        f"batch {batch}: {rate:.0f}"
        for batch, rate in report["in_process_images_per_s_by_batch"].items()
    )
    lines = [
        f"Measured {report['measured_at'][:10]} at {report.get('commit', '?')} on "
        f"{machine['cpus']} cores ({machine['processor']}), Python {machine['python']}, "
        f"onnxruntime {machine['onnxruntime']}, grpcio {machine['grpcio']}; the client runs on "
        f"the same cores. In-process ONNX Runtime, images/s: {by_batch}; the limit is the "
        f"best, {report['limit_images_per_s']:.0f} images/s, and the server ran with "
        f"`max_batch_size={report['server_max_batch_size']}`. Batched requests carry "
        f"{report['request_batch']} images; {report['seconds_per_scenario']:g} s a scenario.",
        "",
        "| scenario | input | mode | images/s | vs limit | p50 ms | p99 ms | errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['scenario']} | {row['input']} | {row['mode']} | {row['images_per_s']:.0f} "
            f"| {row['vs_limit']:.2f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {row['errors']} |"
        )
    return "\n".join(lines) + "\n"


def labels(report: dict[str, Any]) -> str:
    lines = [
        f"Measured {report['measured_at'][:10]}"
        + (f" at {report['commit']}" if "commit" in report else "")
        + f" ({report['seeds']} seeds); summarized {report.get('summarized_at', '')[:10]}.",
        "",
        "| task | labels | random | entropy | balanced (default) "
        "| labels to 95% of best, per seed, vs random: entropy / balanced (mean, 95% CI) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, task in report["tasks"].items():
        means = task["mean_accuracy"]
        checkpoints = " / ".join(str(n) for n in task["labels"])
        cells = [
            " / ".join(f"{v:.3f}".lstrip("0") for v in means.get(s, [])) or "-"
            for s in ("random", "entropy", "balanced")
        ]
        ratios = []
        for strategy in ("entropy", "balanced"):
            ratio = task["strategies"].get(strategy, {}).get("ratio_to_random")
            if ratio:
                low, high = ratio["ci95"]
                ratios.append(f"{ratio['mean']:.2f}x ({low:.2f}-{high:.2f})")
        lines.append(
            f"| {name} | {checkpoints} | {cells[0]} | {cells[1]} | {cells[2]} "
            f"| {' / '.join(ratios)} |"
        )
    return "\n".join(lines) + "\n"


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "labels": labels,
    "serving": serving,
    "feedback_to_serve": feedback_to_serve,
    "stress": stress,
    "feedback": feedback,
    "rollout": rollout,
}


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
