"""Test support: tiny real ONNX models (built with onnx's helper API, no TensorFlow),
published in the exact registry format, and a real server running on a loopback port.

The "colour" backbone maps an image to its mean RGB (scaled), and the colour head turns
that into a softmax over labels, so the right answer for a solid red image is known:
the label whose weight row points at red.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from prometheus_client import CollectorRegistry

from server.app import TlserveServer
from server.registry import BackboneManifest, Registry
from server.settings import ServerSettings

OPSET = [helper.make_opsetid("", 17)]
COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}


def colour_backbone(height: int = 32, width: int = 32, scale: float = 1.0) -> bytes:
    """uint8 [N,H,W,3] -> float [N,3]: mean colour / 255 * scale."""
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes,
        "colour_backbone",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", height, width, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(np.array(scale / 255.0, dtype=np.float32), "scale"),
        ],
    )
    return _serialize(graph)


def linear_head(weights: np.ndarray, bias: np.ndarray | None = None) -> bytes:
    """float [N,D] -> softmax(x @ W + b) [N,C]."""
    dim, classes = weights.shape
    bias = np.zeros(classes, dtype=np.float32) if bias is None else bias
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "linear_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    return _serialize(graph)


def _serialize(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def publish_backbone(registry: Registry, size: int = 32, scale: float = 1.0) -> BackboneManifest:
    return registry.publish_backbone(
        colour_backbone(size, size, scale),
        input_name="images",
        output_name="features",
        height=size,
        width=size,
        feature_dim=3,
        source={"kind": "test-colour", "scale": scale},
    )


def publish_colour_version(
    registry: Registry,
    *,
    labels: Sequence[str] = ("red", "green", "blue"),
    answer_for: dict[str, str] | None = None,
    size: int = 32,
    scale: float = 1.0,
    make_current: bool = True,
) -> str:
    """A version whose answer for each colour is `answer_for[colour]` (default: itself)."""
    answer_for = answer_for or {c: c for c in COLOURS}
    backbone = publish_backbone(registry, size, scale)
    weights = np.zeros((3, len(labels)), dtype=np.float32)
    for channel, colour in enumerate(COLOURS):
        weights[channel, list(labels).index(answer_for[colour])] = 20.0 / scale
    version = registry.publish_version(
        head_onnx=linear_head(weights),
        labels=list(labels),
        backbone=backbone,
        head_input="features",
        head_output="probabilities",
        card={"metrics": {"holdout_accuracy": 1.0}},
    )
    if make_current:
        registry.set_current(version)
    return version


def solid_image(colour: str, size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, COLOURS[colour]).save(buffer, format=fmt)
    return buffer.getvalue()


def solid_pixels(colour: str, height: int = 32, width: int = 32) -> np.ndarray:
    return np.full((height, width, 3), COLOURS[colour], dtype=np.uint8)


class ServerThread:
    """A real TlserveServer on 127.0.0.1:<free port>, its event loop in a thread."""

    def __init__(self, data_dir: Path, **overrides: object) -> None:
        defaults: dict[str, object] = {
            "data_dir": data_dir,
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": 0,
            "registry_poll_seconds": 0.05,
            "execution_provider": "cpu",
            "intra_op_threads": 1,
            "drain_seconds": 2.0,
        }
        self.settings = ServerSettings(**{**defaults, **overrides})  # type: ignore[arg-type]
        self.metrics_registry = CollectorRegistry()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: TlserveServer | None = None

    @property
    def target(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"

    @property
    def registry(self) -> Registry:
        return Registry(self.settings.registry_path)

    def run(self, coroutine: object, timeout: float = 60.0) -> object:
        future: Future[object] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    def start(self) -> ServerThread:
        self._thread.start()
        self.server = TlserveServer(self.settings, registry=self.metrics_registry)
        self.run(self.server.start())
        return self

    def wait_for_version(self, version: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.server is not None
        while time.monotonic() < deadline:
            current = self.server.slot.current
            if current is not None and current.version == version:
                return
            time.sleep(0.02)
        raise AssertionError(f"server did not swap to {version} within {timeout}s")

    def stop(self) -> None:
        if self.server is not None:
            self.run(self.server.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
