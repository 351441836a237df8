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
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import grpc
import numpy as np
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from examples.colour_model import COLOURS, publish_colour_version
from tlserve.clients import TlserveClient, calls, errors
from tlserve.clients.types import LabelCount
from tlserve.proto import classifier_pb2_grpc
from tlserve.server.app import TlserveServer
from tlserve.server.registry import Registry
from tlserve.server.settings import ServerSettings

POSTGRES_DSN = os.environ.get(
    "TLSERVE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose service or tool this machine lacks; fail it under CI (`CI=true`),
    which has them all, so a broken database, kubectl or browser never passes as a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: CI has it, so its absence is a failure)")
    pytest.skip(reason)


def postgres_or_skip() -> str:
    """The test PostgreSQL server's DSN; `unavailable` where none runs."""
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        unavailable(f"no PostgreSQL server reachable at {POSTGRES_DSN}: {exc}")
    return POSTGRES_DSN


# The manifests need kustomize v5: kubectl 1.30 or newer.
MINIMUM_KUBECTL_MINOR = 30


def kubectl_or_skip() -> Path:
    """kubectl 1.30+ from the virtualenv (`make test` installs it) or the PATH;
    `unavailable` where there is none that new."""
    found = []
    for candidate in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")):
        if candidate is None or not Path(candidate).exists():
            continue
        version = subprocess.run(
            [str(candidate), "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        try:
            client = json.loads(version.stdout)["clientVersion"]
            minor = int(str(client["minor"]).rstrip("+"))
        except (ValueError, KeyError, TypeError):
            found.append(f"{candidate} (no version)")
            continue
        if int(client["major"]) == 1 and minor >= MINIMUM_KUBECTL_MINOR:
            return Path(candidate)
        found.append(f"{candidate} ({client.get('gitVersion', '?')})")
    seen = f"; found {', '.join(found)}" if found else ""
    unavailable(
        f"no kubectl 1.{MINIMUM_KUBECTL_MINOR}+ beside {sys.executable} or on the PATH{seen}: "
        "`make test` installs one (scripts/kubectl.py)"
    )


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


ROOT = Path(__file__).resolve().parents[1]


class ServerProcess:
    """`tlserve-server` in a process of its own, as users and SIGTERM see it: free loopback
    ports for gRPC, HTTP and metrics, the data dir given, its output in a file (a pipe
    nobody reads would block it). `settings` become TLSERVE_* variables."""

    def __init__(self, data_dir: Path, **settings: object) -> None:
        self.port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "TLSERVE_HOST": "127.0.0.1",
            "TLSERVE_PORT": str(self.port),
            "TLSERVE_HTTP_PORT": str(self.http_port),
            "TLSERVE_METRICS_PORT": str(self.metrics_port),
            "TLSERVE_DATA_DIR": str(data_dir),
            "TLSERVE_EXECUTION_PROVIDER": "cpu",
            **{f"TLSERVE_{name.upper()}": str(value) for name, value in settings.items()},
        }
        self.log_path = data_dir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Starts it and returns once its gRPC readiness says SERVING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tlserve.server.main"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while self.readiness() != "SERVING":
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not become ready:\n{self.output()}")
            time.sleep(0.1)
        return self

    def readiness(self, timeout: float = 1.0) -> str:
        """The gRPC health status of the server as a whole, or UNREACHABLE."""
        with grpc.insecure_channel(self.target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout
                )
            except grpc.RpcError:
                return "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def terminate(self) -> None:
        """SIGTERM, as a container runtime or kubelet sends it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def output(self) -> str:
        if self._log is not None and not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        if self._log is not None:
            self._log.close()


@dataclass
class Load:
    """Threads that predict and send feedback in a loop until `stop()`, counting every
    outcome by status name. A refused request is counted and the loop goes on, as a load
    generator's does. `plain`: a bare channel and generated stub with no service config
    (no retries, no health checking), as grpcurl or another language's stub would call;
    otherwise tlserve's client with `retries`."""

    target: str
    retries: int = 0
    plain: bool = False
    codes: Counter[str] = field(default_factory=Counter)
    # The first few answers other than OK and UNAVAILABLE, with what they said.
    surprises: list[str] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, clients: int) -> Load:
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(clients)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Counter[str]:
        self._stopping.set()
        for thread in self._threads:
            thread.join(60)
        return self.codes

    def _run(self, worker: int) -> None:
        with TlserveClient(self.target, retries=self.retries, timeout=30) as client:
            channel = grpc.insecure_channel(self.target) if self.plain else None
            stub = classifier_pb2_grpc.ClassifierStub(channel) if channel else None
            n = 0
            while not self._stopping.is_set():
                n += 1
                if n % 2:
                    image = solid_image("red", (20 + worker, 20 + n % 50))
                    key = f"{worker}-{n}-{uuid.uuid4().hex[:6]}"
                    call: calls.Call[Any] = calls.submit_feedback(
                        "red", image=image, idempotency_key=key
                    )
                else:
                    call = calls.predict([solid_image("blue")])
                code = "OK"
                try:
                    if stub is not None:
                        getattr(stub, call.method)(call.request, timeout=30)
                    else:
                        getattr(client.stub, call.method)(call.request, timeout=30)
                except grpc.RpcError as error:
                    code = errors.from_rpc_error(error).status.name
                    if code != "UNAVAILABLE" and len(self.surprises) < 5:
                        self.surprises.append(f"{call.method}: {code}: {error.details()}")
                with self._lock:
                    self.codes[code] += 1
                if code != "OK":
                    time.sleep(0.01)  # a refused client comes back at once, as load does
            if channel is not None:
                channel.close()


# The last release whose registry and store had no named models: upgrade tests write
# their data with its code, not with hand-made rows.
RELEASE_BEFORE_MODELS = "abe8142"


def previous_release(folder: Path, commit: str = RELEASE_BEFORE_MODELS) -> Path:
    """A folder whose `tlserve` package is that commit's code (from this repository's
    history), to put first on PYTHONPATH of a subprocess; skips without the history."""
    code = folder / "code"
    tlserve = code / "tlserve"
    tlserve.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", commit, "server", "clients", "proto"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        reason = f"commit {commit} is not in this clone's history: {archive.stderr.decode()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    subprocess.run(["tar", "-x", "-C", str(tlserve)], input=archive.stdout, check=True)
    (tlserve / "__init__.py").write_text("")
    return code


def run_previous_release(code: Path, script: str, *args: str) -> str:
    """Runs `script` (with `args` in sys.argv[1:]) under the previous release's code;
    returns its standard output."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def serve_colour_model(data_dir: Path, **settings: Any) -> ServerThread:
    """A started server on `data_dir` with one colour model published and `settings`."""
    publish_colour_version(Registry.local(data_dir / "registry"))
    return ServerThread(data_dir, **settings).start()


def tlserve(*args: str, target: str) -> subprocess.CompletedProcess[str]:
    """The `tlserve` command, run as a user would, against `target`."""
    return subprocess.run(
        [sys.executable, "-m", "tlserve.clients.cli", "--target", target, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


TRITON_PROBE = Path(__file__).with_name("triton_probe.py")


def run_triton_probe(
    protocol: str, address: str, model: str, *options: str
) -> subprocess.CompletedProcess[str]:
    """NVIDIA's tritonclient run against `address` (tests/triton_probe.py, its own process:
    its report on stdout as JSON, a refusal on stderr)."""
    return subprocess.run(
        [sys.executable, str(TRITON_PROBE), protocol, address, model, *options],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(server: ServerThread) -> Samples:
    """A real scrape of the server's /metrics, parsed with prometheus_client's parser."""
    assert server.server is not None and server.server.metrics_port
    url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for found, v in samples.get(name, []) if labels.items() <= found.items())


def colour_png(rgb: tuple[int, int, int], jitter: int) -> bytes:
    """A 16x16 PNG of `rgb` moved by up to 20 per channel, the same for the same `jitter`."""
    pixels = np.clip(np.array(rgb) + np.random.default_rng(jitter).integers(-20, 20, 3), 0, 255)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), tuple(int(v) for v in pixels)).save(buffer, "PNG")
    return buffer.getvalue()


# Bearer tokens of each role, long enough for the server's strength check.
PREDICT = "predict-token-0123456789abcdef"
LABEL = "label-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


# Each named model answers every colour with another one: a row scored by the wrong head
# would give the wrong label.
SHIFTS = {"shift-one": 1, "shift-two": 2}
ORDER = list(COLOURS)


def shifted(shift: int) -> dict[str, str]:
    return {c: ORDER[(i + shift) % len(ORDER)] for i, c in enumerate(ORDER)}


def publish_named(registry: Registry, name: str, answer_for: dict[str, str]) -> str:
    registry.add_model(name)
    return publish_colour_version(registry.for_model(name), answer_for=answer_for)


def publish_three_models(data_dir: Path) -> None:
    """The default colour model and the two shifted ones, in the data dir's registry."""
    registry = Registry.local(data_dir / "registry")
    publish_colour_version(registry)
    for name, shift in SHIFTS.items():
        publish_named(registry, name, shifted(shift))


def serve_three_models(data_dir: Path, tokens: str = "", **settings: Any) -> ServerThread:
    """A started server with the three models of publish_three_models; `tokens`, when
    given, is the text of its tokens file."""
    publish_three_models(data_dir)
    if tokens:
        settings["tokens_file"] = data_dir / "tokens"
        settings["tokens_file"].write_text(tokens)
    return ServerThread(data_dir, **settings).start()


# The labeling page's browser tests drive Debian's chromium (Playwright, from the dev extra).
CHROMIUM = os.environ.get("TLSERVE_CHROMIUM") or shutil.which("chromium") or ""


def chromium_or_skip() -> str:
    """The chromium to drive; skips the test, saying how to get one, where there is none."""
    if not CHROMIUM:
        unavailable("no chromium: `make test` installs Debian's (apt-get install chromium)")
    return CHROMIUM
