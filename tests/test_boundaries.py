"""The dependency rule: clients <- server <- trainer. The server never loads TensorFlow,
and the client loads neither TensorFlow nor ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loaded_modules(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    return set(json.loads(completed.stdout.strip().splitlines()[-1]))


def test_importing_clients_loads_no_runtime() -> None:
    modules = loaded_modules("import tlserve.clients, tlserve.clients.cli")
    assert "grpc" in modules
    assert not {m for m in modules if m.split(".")[0] in {"tensorflow", "onnxruntime", "keras"}}


def test_a_running_server_never_loads_tensorflow(tmp_path: Path) -> None:
    code = f"""
from pathlib import Path
from tlserve.server.registry import Registry
from examples.colour_model import publish_colour_version
from tests.support import ServerThread, solid_image
from tlserve.clients import TlserveClient
publish_colour_version(Registry.local(Path({str(tmp_path)!r}) / "registry"))
server = ServerThread(Path({str(tmp_path)!r})).start()
with TlserveClient(server.target) as client:
    assert client.predict_one(solid_image("red")).label == "red"
server.stop()
import tlserve.server.main, tlserve.server.app
"""
    modules = loaded_modules(code)
    assert "onnxruntime" in modules and "tlserve.server.app" in modules
    assert not {m for m in modules if m.split(".")[0] in {"tensorflow", "keras", "tf2onnx"}}
