"""The README's configuration reference is generated from the settings classes."""

from __future__ import annotations

from pathlib import Path

from scripts import results_tables
from scripts.settings_reference import BEGIN, END, reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_configuration_reference_matches_the_settings_classes() -> None:
    text = README.read_text()
    embedded = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    stale = "README.md's settings reference is stale: run scripts/settings_reference.py --write"
    assert embedded == reference().strip(), stale


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_benchmark_tables_are_the_results_files() -> None:
    text = README.read_text()
    for name in results_tables.TABLES:
        begin, end = results_tables.markers(name)
        embedded = text[text.index(begin) + len(begin) : text.index(end)].strip()
        stale = f"README.md's {name} table is stale: run scripts/results_tables.py --write"
        assert embedded == results_tables.table(name).strip(), stale
