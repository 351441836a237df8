"""Test support: tiny real ONNX models (built with onnx's helper API, no TensorFlow),
published in the exact registry format, and a real server running on a loopback port.

The "colour" backbone maps an image to its mean RGB (scaled), and the colour head turns
that into a softmax over labels, so the right answer for a solid red image is known:
the label whose weight row points at red.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from prometheus_client import CollectorRegistry

from examples.colour_model import (
    COLOURS,
)
from tlserve.clients.types import LabelCount
from tlserve.server.app import TlserveServer
from tlserve.server.registry import Registry
from tlserve.server.settings import ServerSettings


def free_port() -> int:
    """A port free on loopback now (for a server in another process)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    context: ssl.SSLContext | None = None,
) -> HttpReply:
    """One real HTTP request (stdlib urllib); error statuses are returned, not raised.
    `context` is the TLS client side for https URLs (CA, client certificate)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return HttpReply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return HttpReply(error.code, dict(error.headers), error.read())


def multipart(fields: list[tuple[str, bytes, str | None]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body from (name, data, filename or None) fields."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data, filename in fields:
        disposition = f'form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"'
        parts.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def label_samples(labels: list[LabelCount]) -> dict[str, int]:
    """ListLabels as {label: samples}, for comparing with what was sent."""
    return {count.label: count.samples for count in labels}


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
            "http_port": 0,
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
    def http_url(self) -> str:
        assert self.server is not None and self.server.http_port is not None
        scheme = "https" if self.settings.tls_cert_file is not None else "http"
        return f"{scheme}://127.0.0.1:{self.server.http_port}"

    @property
    def registry(self) -> Registry:
        return Registry.local(self.settings.registry_path)

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
