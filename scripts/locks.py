"""Write the images' lock files, deploy/locks/<image>.txt (`make locks`).

One resolution by pip (`--dry-run --report`, nothing is installed) per image of what it
asks for: `.[server,s3]`, `.[trainer,s3]` and `.[gpu,s3]`, on this interpreter, which
must be what the images run (CPython 3.11 on glibc Linux x86_64, as bookworm). Each
Dockerfile installs exactly its lock (`--no-deps -r`, then `pip check`) in a layer of its
own, so an image built next month holds the versions tested today, and a change to the
sources does not reinstall TensorFlow; re-run this to move the versions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "deploy" / "locks"
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
    LOCKS.mkdir(exist_ok=True)
    for image, requirements in IMAGES.items():
        pins = resolve(requirements)
        lines = [
            f"# The {image} image's packages, pinned: written by `make locks`",
            f"# (scripts/locks.py) from {' '.join(requirements)}, CPython 3.11, Linux x86_64.",
            *(f"{name}=={version}" for name, version in sorted(pins.items())),
        ]
        (LOCKS / f"{image}.txt").write_text("\n".join(lines) + "\n")
        print(f"deploy/locks/{image}.txt: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
