"""Generate the Python stubs (+ .pyi) for proto/ into the `tlserve.proto` package.

Run with `make protos`. It uses grpcio-tools 1.66.x on purpose: protobuf's gencode
runs on any runtime at least as new as the generator, so stubs made by the oldest
supported tools work with protobuf 5.27 through 7.x (tritonclient still needs 6.x).

The stubs sit flat beside their sources in `proto/` (installed as `tlserve.proto`),
so the client and the server import them from one public module. protoc writes them
in folders named after the proto packages; they are moved up and their imports of
each other rewritten, so no generated module claims a top-level name such as
`inference` (which tritonclient also registers).
"""

from __future__ import annotations

import re
import sys
import tempfile
from importlib.metadata import version as dist_version
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
PACKAGE = "tlserve.proto"
EXPECTED_TOOLS = "1.66."
GENERATED = re.compile(r".*_pb2(_grpc)?\.pyi?$")


def _rewrite_imports(text: str, packages: list[str]) -> str:
    """`from tlserve.v1 import x_pb2` -> `from tlserve.proto import x_pb2`, and the module
    name the messages record (pickling looks it up) -> `tlserve.proto.x_pb2`."""
    for dotted in packages:
        text = re.sub(
            rf"^from {re.escape(dotted)} import ", f"from {PACKAGE} import ", text, flags=re.M
        )
        text = re.sub(rf"'{re.escape(dotted)}\.(\w+_pb2)'", rf"'{PACKAGE}.\1'", text)
    return text


def main() -> int:
    version = dist_version("grpcio-tools")
    if not version.startswith(EXPECTED_TOOLS):
        print(
            f"gen_protos: grpcio-tools {EXPECTED_TOOLS}x required, found {version}", file=sys.stderr
        )
        return 2
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    packages = sorted({".".join(p.parent.relative_to(PROTO_ROOT).parts) for p in protos} - {""})
    for stale in PROTO_ROOT.iterdir():
        if GENERATED.match(stale.name):
            stale.unlink()
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        if protoc.main(args) != 0:
            print("gen_protos: protoc failed", file=sys.stderr)
            return 1
        for path in out.rglob("*"):
            if path.is_file() and GENERATED.match(path.name):
                target = PROTO_ROOT / path.name
                if target.exists():
                    print(f"gen_protos: two protos generate {path.name}", file=sys.stderr)
                    return 1
                target.write_text(_rewrite_imports(path.read_text(), packages))
    print(f"gen_protos: {len(protos)} proto files -> proto/ ({PACKAGE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
