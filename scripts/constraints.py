"""Write deploy/constraints.txt: every package the images install, pinned (`make constraints`).

One resolution by pip (`--dry-run --report`, nothing is installed) of what the three
images ask for: `.[server,s3]`, `.[trainer,s3]` and `.[gpu,s3]`, on this interpreter,
which must be what the images run (CPython 3.11 on glibc Linux x86_64, as bookworm).
The Dockerfiles install with `-c deploy/constraints.txt`, so an image built next month
holds the versions tested today; re-run this to move them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "deploy" / "constraints.txt"
# The CPU and the CUDA wheel both provide `onnxruntime`: resolved one image at a time.
IMAGES = {
    "server": [".[server,s3]"],
    "trainer": [".[trainer,s3]"],
    "server-gpu": [".[gpu,s3]"],
}
IMAGE_PYTHON = (3, 11)


def resolve(requirements: list[str]) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                *requirements,
            ],
            cwd=ROOT,
            check=True,
        )
        installed = json.loads(report.read_text())["install"]
    return {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in installed
        if item["metadata"]["name"] != "tlserve"
    }


def main() -> int:
    if sys.version_info[:2] != IMAGE_PYTHON or sys.platform != "linux":
        print(f"run on CPython {IMAGE_PYTHON} on Linux: the images' interpreter", file=sys.stderr)
        return 2
    pins: dict[str, str] = {}
    for image, requirements in IMAGES.items():
        for name, version in resolve(requirements).items():
            if pins.get(name, version) != version:
                print(f"{name}: {pins[name]} and {version} ({image}) disagree", file=sys.stderr)
                return 1
            pins[name] = version
    lines = [
        "# Every package the images install, pinned: written by `make constraints`",
        "# (scripts/constraints.py) for CPython 3.11 on Linux x86_64. Used by deploy/docker/*.",
        *(f"{name}=={version}" for name, version in sorted(pins.items())),
    ]
    TARGET.write_text("\n".join(lines) + "\n")
    print(f"{TARGET.relative_to(ROOT)}: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
