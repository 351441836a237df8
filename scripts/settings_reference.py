"""Print (or check) the README's configuration reference, generated from the settings classes.

    python scripts/settings_reference.py          # print the markdown
    python scripts/settings_reference.py --write  # replace it in README.md

The README holds it between `<!-- settings:begin -->` and `<!-- settings:end -->`; a
test fails when the two drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tlserve.server.settings import ServerSettings  # noqa: E402
from tlserve.trainer.settings import TrainerSettings  # noqa: E402

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def settings_classes() -> list[tuple[str, type[BaseSettings]]]:
    return [("tlserve-server", ServerSettings), ("tlserve-trainer", TrainerSettings)]


def reference() -> str:
    parts = []
    for program, cls in settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        parts.append(f"### {program}\n")
        parts.append("| setting | environment variable | default | meaning |")
        parts.append("| --- | --- | --- | --- |")
        for name, field in cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            shown = "(empty)" if default in ("", None) else f"`{default}`"
            description = " ".join((field.description or "").split()).replace("|", "\\|")
            parts.append(f"| `{name}` | `{prefix}{name.upper()}` | {shown} | {description} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def replace_in(text: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + reference() + text[end:]


def main() -> int:
    readme = ROOT / "README.md"
    if "--write" in sys.argv:
        readme.write_text(replace_in(readme.read_text()))
        return 0
    print(reference(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
