"""`tlserve-server probe`, the containers' HEALTHCHECK: it reads the same TLSERVE_*
settings as the server, and asks that server, on this host, whether it is live or ready."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.certs import Pki
from tests.support import ServerThread, serve_colour_model

ROOT = Path(__file__).resolve().parents[1]


def probe(server: ServerThread, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert server.server is not None
    settings = {
        "TLSERVE_HOST": "0.0.0.0",  # as in a container: the probe asks loopback
        "TLSERVE_PORT": str(server.server.port),
        "TLSERVE_HTTP_PORT": str(server.server.http_port),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "tlserve.server.main", "probe", *args],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **settings},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_live_and_ready_over_http(served: ServerThread) -> None:
    assert probe(served).returncode == 0
    assert probe(served, "ready").returncode == 0


def test_a_server_with_nothing_to_serve_is_live_but_not_ready(empty_server: ServerThread) -> None:
    assert probe(empty_server, "live").returncode == 0
    not_ready = probe(empty_server, "ready")
    assert not_ready.returncode == 1
    assert "not ready" in not_ready.stdout and "503" in not_ready.stdout


def test_over_tls_without_credentials(tls_server: ServerThread, pki: Pki) -> None:
    secured = {"TLSERVE_TLS_CERT_FILE": str(pki.server.cert)}
    assert probe(tls_server, "ready", **secured).returncode == 0
    # Plain HTTP against the TLS listener is not an answer.
    assert probe(tls_server, "ready").returncode == 1


def test_against_a_server_that_requires_client_certificates(tmp_path: Path, pki: Pki) -> None:
    """The container HEALTHCHECK and the exec probe presented no certificate, so a server
    requiring mutual TLS always looked down."""
    server = serve_colour_model(
        tmp_path,
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
        tls_client_ca_file=pki.ca.cert,
    )
    try:
        secured = {
            "TLSERVE_TLS_CERT_FILE": str(pki.server.cert),
            "TLSERVE_TLS_KEY_FILE": str(pki.server.key),
            "TLSERVE_TLS_CLIENT_CA_FILE": str(pki.ca.cert),
        }
        # The server's certificate is for servers only: refused, and the probe says why.
        refused = probe(server, "ready", **secured)
        assert refused.returncode == 1 and "TLSERVE_PROBE_CERT_FILE" in refused.stdout
        client = {
            "TLSERVE_PROBE_CERT_FILE": str(pki.carol.cert),
            "TLSERVE_PROBE_KEY_FILE": str(pki.carol.key),
        }
        assert probe(server, "ready", **secured, **client).returncode == 0, refused.stdout
        assert probe(server, "live", **secured, **client).returncode == 0
        stranger = {
            "TLSERVE_PROBE_CERT_FILE": str(pki.stranger.cert),
            "TLSERVE_PROBE_KEY_FILE": str(pki.stranger.key),
        }
        assert probe(server, "ready", **secured, **stranger).returncode == 1
    finally:
        server.stop()


def test_a_stopped_server_is_not_live_and_grpc_only_is_probed_on_its_port(
    tmp_path: Path,
) -> None:
    server = ServerThread(tmp_path).start()
    try:
        assert probe(server, "live", TLSERVE_HTTP_PORT="none").returncode == 0
        refused = probe(server, "ready", TLSERVE_HTTP_PORT="none")
        assert refused.returncode == 2 and "TLSERVE_HTTP_PORT" in refused.stdout
    finally:
        server.stop()
    down = probe(server, "live")
    assert down.returncode == 1 and "not live" in down.stdout
    assert probe(server, "live", TLSERVE_HTTP_PORT="none").returncode == 1


def test_the_probe_imports_no_server(served: ServerThread) -> None:
    """`probe live` imported the whole server (aiohttp, numpy, ONNX Runtime): 1.7 s idle
    and 2.9-7.2 s under load, past the HEALTHCHECK's 5 s timeout. It reads the settings
    and asks over HTTP, nothing more."""
    assert served.server is not None
    heavy = ("aiohttp", "numpy", "onnxruntime", "grpc", "PIL", "psycopg", "google.protobuf")
    script = (
        "import sys\n"
        "from tlserve.server.main import main\n"
        "code = main(['probe', 'ready'])\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "TLSERVE_HOST": "127.0.0.1",
            "TLSERVE_PORT": str(served.server.port),
            "TLSERVE_HTTP_PORT": str(served.server.http_port),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "[]"
