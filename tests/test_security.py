"""The trust boundary against real servers, over gRPC and REST: TLS and mutual TLS (with
certificates made here), bearer tokens per role, rate limits, and the refusal to expose
a server without them. Each refusal is checked on both protocols with its status."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import logging
import os
import shutil
import ssl
import subprocess
import sys
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from examples.colour_model import publish_colour_version
from tests.certs import Authority, Issued, Pki
from tests.support import (
    ADMIN,
    LABEL,
    PREDICT,
    HttpReply,
    ServerThread,
    http_call,
    run_triton_probe,
    serve_colour_model,
    solid_image,
    tlserve,
)
from tlserve.clients import FeedbackItem, TlserveClient, errors, tls_credentials
from tlserve.proto import classifier_pb2 as pb
from tlserve.proto import classifier_pb2_grpc as pb_grpc
from tlserve.server.app import TlserveServer
from tlserve.server.registry import Registry
from tlserve.server.security.setup import InsecureExposure
from tlserve.server.security.validity import NotACertificate, first_certificate_validity
from tlserve.server.settings import ServerSettings

RED_BASE64 = base64.b64encode(solid_image("red")).decode()


@pytest.fixture
def mtls_server(tmp_path: Path, pki: Pki) -> Iterator[ServerThread]:
    """Mutual TLS required; roles come from the certificate's name."""
    server = serve_colour_model(
        tmp_path,
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
        tls_client_ca_file=pki.ca.cert,
        client_cert_roles="alice=admin,bob=label",
    )
    yield server
    server.stop()


# ---- one call, over either protocol --------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a call got: ok, a status (gRPC code name / HTTP status), or a failed handshake."""

    ok: bool
    grpc_code: str = ""
    http_status: int = 0
    handshake_failed: bool = False
    message: str = ""
    retry_after: str = ""


@dataclass(frozen=True)
class Client:
    ca: Path | None = None
    cert: Issued | None = None
    authorization: str | None = None


def _grpc(server: ServerThread, client: Client, method: str) -> Outcome:
    if client.ca is None:
        channel = grpc.insecure_channel(server.target)
    else:
        credentials = tls_credentials(
            client.ca,
            client.cert.cert if client.cert else None,
            client.cert.key if client.cert else None,
        )
        channel = grpc.secure_channel(server.target, credentials)
    metadata = (("authorization", client.authorization),) if client.authorization else ()
    stub = pb_grpc.ClassifierStub(channel)
    requests: dict[str, Callable[[], object]] = {
        "predict": lambda: stub.Predict(
            pb.PredictRequest(images=[pb.Image(encoded=solid_image("red"))]),
            metadata=metadata,
            timeout=5,
        ),
        "feedback": lambda: stub.SubmitFeedback(
            pb.SubmitFeedbackRequest(label="red", image=pb.Image(encoded=solid_image("red"))),
            metadata=metadata,
            timeout=5,
        ),
        "labels": lambda: stub.ListLabels(pb.ListLabelsRequest(), metadata=metadata, timeout=5),
        "suggest": lambda: stub.SuggestLabels(
            pb.SuggestLabelsRequest(count=3), metadata=metadata, timeout=5
        ),
        "training": lambda: stub.TriggerTraining(
            pb.TriggerTrainingRequest(), metadata=metadata, timeout=5
        ),
    }
    try:
        with channel:
            requests[method]()
    except grpc.RpcError as error:
        code = error.code()
        trailing = dict(error.trailing_metadata() or ())
        details = error.details() or ""
        return Outcome(
            ok=False,
            grpc_code=code.name,
            # The TLS handshake itself failed: not a refused connection or a dead server.
            handshake_failed=code == grpc.StatusCode.UNAVAILABLE and _tls_failure(details),
            message=details,
            retry_after=str(trailing.get("retry-after", "")),
        )
    return Outcome(ok=True)


def _rest(server: ServerThread, client: Client, method: str) -> Outcome:
    context = None
    url = server.http_url
    if client.ca is not None:
        context = ssl.create_default_context(cafile=client.ca)
        if client.cert is not None:
            context.load_cert_chain(client.cert.cert, client.cert.key)
    elif url.startswith("https"):
        url = url.replace("https", "http", 1)  # a plaintext client against a TLS port
    headers = {"Authorization": client.authorization} if client.authorization else {}
    image_headers = {**headers, "Content-Type": "image/png"}
    calls: dict[str, Callable[[], HttpReply]] = {
        "predict": lambda: http_call(
            f"{url}/v1/predict", "POST", solid_image("red"), image_headers, 5, context
        ),
        "feedback": lambda: http_call(
            f"{url}/v1/feedback",
            "POST",
            json.dumps({"label": "red", "image_base64": RED_BASE64}).encode(),
            {**headers, "Content-Type": "application/json"},
            5,
            context,
        ),
        "labels": lambda: http_call(f"{url}/v1/labels", "GET", None, headers, 5, context),
        "suggest": lambda: http_call(
            f"{url}/v1/suggestions?count=3", "GET", None, headers, 5, context
        ),
        "training": lambda: http_call(f"{url}/v1/training", "POST", b"", headers, 5, context),
    }
    try:
        reply = calls[method]()
    except (ssl.SSLError, ConnectionResetError, urllib.error.URLError) as error:
        # A handshake the server broke off (reset) or failed; a refused connection is not one.
        reason = getattr(error, "reason", error)
        if isinstance(reason, ConnectionRefusedError):
            raise
        return Outcome(
            ok=False, handshake_failed=isinstance(reason, ssl.SSLError | ConnectionResetError)
        )
    if reply.status < 400:
        return Outcome(ok=True, http_status=reply.status)
    body = reply.json()
    return Outcome(
        ok=False,
        http_status=reply.status,
        message=body.get("error", ""),
        retry_after=reply.headers.get("Retry-After", ""),
    )


def _tls_failure(details: str) -> bool:
    """Whether gRPC's UNAVAILABLE details say the TLS handshake failed: the client's own
    check (an untrusted certificate) or the server closing the socket on a handshake it
    could not complete (plaintext), as opposed to a refused connection."""
    lowered = details.lower()
    said = ("ssl", "handshake", "tls", "certificate", "socket closed")
    return any(word in lowered for word in said) and "connection refused" not in lowered


PROTOCOLS = {"grpc": _grpc, "rest": _rest}


def call(server: ServerThread, protocol: str, client: Client, method: str) -> Outcome:
    return PROTOCOLS[protocol](server, client, method)


# ---- TLS -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tls_refuses_plaintext_and_untrusted_servers(
    tls_server: ServerThread, pki: Pki, protocol: str
) -> None:
    token = f"Bearer {PREDICT}"
    assert call(tls_server, protocol, Client(pki.ca.cert, None, token), "predict").ok
    plaintext = call(tls_server, protocol, Client(None, None, token), "predict")
    assert plaintext.handshake_failed or plaintext.http_status == 400
    wrong_ca = call(tls_server, protocol, Client(pki.other_ca.cert, None, token), "predict")
    assert wrong_ca.handshake_failed


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tokens_and_roles(tls_server: ServerThread, pki: Pki, protocol: str) -> None:
    def as_(authorization: str | None, method: str) -> Outcome:
        return call(tls_server, protocol, Client(pki.ca.cert, None, authorization), method)

    unauthenticated = {"grpc": "UNAUTHENTICATED", "rest": 401}[protocol]
    denied = {"grpc": "PERMISSION_DENIED", "rest": 403}[protocol]

    def status(outcome: Outcome) -> str | int:
        assert not outcome.ok
        return outcome.grpc_code or outcome.http_status

    assert status(as_(None, "predict")) == unauthenticated
    assert status(as_("Bearer wrong-token-0123456789", "predict")) == unauthenticated
    no_scheme = as_(PREDICT, "predict")
    assert status(no_scheme) == unauthenticated and "`Bearer <token>`" in no_scheme.message
    assert status(as_(f"Basic {PREDICT}", "predict")) == unauthenticated
    assert as_(f"Bearer {PREDICT}", "predict").ok
    wrong_role = as_(f"Bearer {PREDICT}", "feedback")
    assert status(wrong_role) == denied and "`label`" in wrong_role.message
    assert status(as_(f"Bearer {PREDICT}", "labels")) == denied
    assert status(as_(f"Bearer {LABEL}", "training")) == denied
    assert as_(f"Bearer {LABEL}", "feedback").ok and as_(f"Bearer {LABEL}", "labels").ok
    assert as_(f"Bearer {LABEL}", "predict").ok  # roles nest: label includes predict
    assert as_(f"Bearer {ADMIN}", "training").ok


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mutual_tls_identities(mtls_server: ServerThread, pki: Pki, protocol: str) -> None:
    def with_cert(cert: Issued | None, method: str, ca: Path | None = None) -> Outcome:
        return call(mtls_server, protocol, Client(ca or pki.ca.cert, cert), method)

    assert with_cert(None, "predict").handshake_failed
    assert with_cert(pki.stranger, "predict").handshake_failed  # right name, wrong CA
    assert with_cert(pki.expired, "predict").handshake_failed
    assert with_cert(pki.carol, "predict").ok  # verified, unnamed: the default role
    refused = {"grpc": "PERMISSION_DENIED", "rest": 403}[protocol]
    denied = with_cert(pki.carol, "feedback")
    assert (denied.grpc_code or denied.http_status) == refused and "cert:carol" in denied.message
    assert with_cert(pki.bob, "feedback").ok
    labeler = with_cert(pki.bob, "training")
    assert (labeler.grpc_code or labeler.http_status) == refused, labeler
    assert with_cert(pki.alice, "training").ok


def test_probes_stay_open_and_the_cli_speaks_tls(tls_server: ServerThread, pki: Pki) -> None:
    context = ssl.create_default_context(cafile=pki.ca.cert)
    ready = http_call(f"{tls_server.http_url}/v2/health/ready", context=context)
    assert ready.status == 200 and ready.json() == {"ready": True}
    with grpc.secure_channel(tls_server.target, tls_credentials(pki.ca.cert)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
    tls = ("--ca-file", str(pki.ca.cert))
    listed = tlserve(*tls, "--token", LABEL, "labels", target=tls_server.target)
    assert listed.returncode == 0 and "samples in all" in listed.stdout
    refused = tlserve(*tls, "--token", PREDICT, "labels", target=tls_server.target)
    assert refused.returncode == 1
    assert (
        refused.stderr.startswith("tlserve: PERMISSION_DENIED")
        and "Traceback" not in refused.stderr
    )
    missing = tlserve("--ca-file", "/nonexistent/ca.pem", "labels", target=tls_server.target)
    assert missing.returncode == 2 and "TLS settings" in missing.stderr


def test_the_principal_is_recorded_with_each_label(tls_server: ServerThread, pki: Pki) -> None:
    credentials = tls_credentials(pki.ca.cert)
    with TlserveClient(tls_server.target, credentials=credentials, token=LABEL) as client:
        receipt = client.submit_feedback("red", image=solid_image("red"), source="claims-admin")
    assert tls_server.server is not None
    (record,) = tls_server.server.store.label_history(receipt.sample_id)
    assert record.principal.startswith("token:label-") and record.source == "claims-admin"
    assert LABEL not in record.principal


def test_certificates_are_reloaded_when_the_files_change(
    tmp_path: Path, tls_server: ServerThread, pki: Pki
) -> None:
    """A rotated Secret: new connections get the new certificate, from a new CA here, so
    a client trusting only the new CA fails before the rotation and succeeds after."""
    new_ca = Authority(tmp_path / "rotated", "rotated CA")
    rotated = new_ca.server("rotated")
    token = f"Bearer {PREDICT}"
    for protocol in PROTOCOLS:
        assert call(
            tls_server, protocol, Client(new_ca.cert, None, token), "predict"
        ).handshake_failed
    staged = tmp_path / "staged"
    staged.mkdir()
    for source, target in ((rotated.cert, pki.server.cert), (rotated.key, pki.server.key)):
        shutil.copy(source, staged / target.name)
    original = pki.server.cert.read_bytes(), pki.server.key.read_bytes()
    try:
        for name in (pki.server.key.name, pki.server.cert.name):
            os.replace(staged / name, pki.server.cert.parent / name)
        for protocol in PROTOCOLS:
            assert call(tls_server, protocol, Client(new_ca.cert, None, token), "predict").ok
            assert call(
                tls_server, protocol, Client(pki.ca.cert, None, token), "predict"
            ).handshake_failed
    finally:
        pki.server.cert.write_bytes(original[0])
        pki.server.key.write_bytes(original[1])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tritonclient_over_mutual_tls_with_a_token(tmp_path: Path, pki: Pki, protocol: str) -> None:
    server = serve_colour_model(
        tmp_path,
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
        tls_client_ca_file=pki.ca.cert,
        predict_tokens=PREDICT,
        client_cert_default_role="none",
    )
    try:
        address = server.target if protocol == "grpc" else server.http_url.split("//")[1]
        tls = ["--ca", str(pki.ca.cert), "--cert", str(pki.carol.cert), "--key", str(pki.carol.key)]

        def probe(*extra: str) -> subprocess.CompletedProcess[str]:
            return run_triton_probe(protocol, address, "tlserve", *tls, *extra)

        completed = probe("--token", PREDICT)
        assert completed.returncode == 0, completed.stderr
        report = json.loads(completed.stdout)
        assert report["server_ready"] and report["bytes_labels"] == ["red", "blue", "green"]
        # The certificate alone has no role here: metadata needs the token.
        refused = probe()
        assert refused.returncode != 0 and "predict" in refused.stderr
    finally:
        server.stop()


# ---- rate limits ---------------------------------------------------------------------


def assert_limited_after_burst(
    server: ServerThread, protocol: str, method: str, burst: int
) -> Client:
    """`burst` calls of `method` by one label token pass, the next is refused with a retry
    hint, and a second token's bucket is its own; returns the first token's client."""
    first, second = (
        Client(authorization=f"Bearer {LABEL}"),
        Client(authorization=f"Bearer {LABEL}-second"),
    )
    for _ in range(burst):
        assert call(server, protocol, first, method).ok
    limited = call(server, protocol, first, method)
    assert (limited.grpc_code or limited.http_status) in ("RESOURCE_EXHAUSTED", 429)
    assert "rate limit" in limited.message and float(limited.retry_after) > 0
    assert call(server, protocol, second, method).ok  # its own bucket
    return first


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rate_limits_per_principal(tmp_path: Path, protocol: str) -> None:
    server = serve_colour_model(
        tmp_path,
        label_tokens=f"{LABEL},{LABEL}-second",
        predict_rate=0.5,
        predict_burst=2,
        feedback_rate=0.5,
        feedback_burst=1,
    )
    try:
        first = assert_limited_after_burst(server, protocol, "predict", burst=2)
        assert call(server, protocol, first, "feedback").ok
        limited = call(server, protocol, first, "feedback")
        assert (limited.grpc_code or limited.http_status) in ("RESOURCE_EXHAUSTED", 429), limited
        assert limited.retry_after and "rate limit" in limited.message
    finally:
        server.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_suggestions_are_rate_limited_per_principal(tmp_path: Path, protocol: str) -> None:
    """SuggestLabels scores every kept prediction and encodes PNGs: it had no limit."""
    server = serve_colour_model(
        tmp_path, label_tokens=f"{LABEL},{LABEL}-second", suggest_rate=0.2, suggest_burst=2
    )
    try:
        assert_limited_after_burst(server, protocol, "suggest", burst=2)
    finally:
        server.stop()


def test_the_client_reports_the_retry_hint(tmp_path: Path) -> None:
    server = serve_colour_model(tmp_path, feedback_rate=0.2, feedback_burst=1)
    try:
        with TlserveClient(server.target, retries=0) as client:
            client.submit_feedback("red", image=solid_image("red"))
            with pytest.raises(errors.ResourceExhausted) as limited:
                client.submit_feedback("red", image=solid_image("red"))
            assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 5
            receipt = client.stream_feedback([FeedbackItem("red", image=solid_image("red"))])
            assert receipt.rejected == 1 and "rate limit" in receipt.errors[0][2]
    finally:
        server.stop()


# ---- exposure --------------------------------------------------------------------------


def test_a_non_loopback_bind_needs_tls_and_credentials(tmp_path: Path, pki: Pki) -> None:
    base = {"data_dir": tmp_path, "port": 0, "http_port": 0, "metrics_port": None}
    with pytest.raises(InsecureExposure, match=r"TLS .*and credentials"):
        TlserveServer(ServerSettings(**base, host="0.0.0.0"))  # type: ignore[arg-type]
    tls = {"tls_cert_file": pki.server.cert, "tls_key_file": pki.server.key}
    with pytest.raises(InsecureExposure, match="without credentials"):
        TlserveServer(ServerSettings(**base, host="0.0.0.0", **tls))  # type: ignore[arg-type]
    with pytest.raises(InsecureExposure, match="without TLS"):
        TlserveServer(ServerSettings(**base, host="0.0.0.0", admin_tokens=ADMIN))  # type: ignore[arg-type]
    # The HTTP listener counts too.
    with pytest.raises(InsecureExposure, match=r"0\.0\.0\.0"):
        TlserveServer(ServerSettings(**base, http_host="0.0.0.0"))  # type: ignore[arg-type]
    TlserveServer(ServerSettings(**base, host="0.0.0.0", admin_tokens=ADMIN, **tls)).store.close()  # type: ignore[arg-type]
    TlserveServer(ServerSettings(**base, host="0.0.0.0", insecure=True)).store.close()  # type: ignore[arg-type]


def test_an_exposed_server_refuses_a_privileged_anonymous_role_and_warns_of_open_metrics(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """Host 0.0.0.0 with TLS and an admin token, and anonymous `admin`: it started
    silently, as did plaintext metrics on 0.0.0.0."""
    base = {"data_dir": tmp_path, "port": 0, "http_port": 0, "metrics_port": None}
    tls = {"tls_cert_file": pki.server.cert, "tls_key_file": pki.server.key}
    exposed = {**base, **tls, "host": "0.0.0.0", "admin_tokens": ADMIN}
    for role in ("admin", "label"):
        with pytest.raises(InsecureExposure, match=f"TLSERVE_ANONYMOUS_ROLE is {role}"):
            TlserveServer(ServerSettings(**exposed, anonymous_role=role))  # type: ignore[arg-type]
    TlserveServer(ServerSettings(**exposed, anonymous_role="predict")).store.close()  # type: ignore[arg-type]
    assert "plaintext" not in caplog.text
    with caplog.at_level("WARNING"):
        open_metrics = {**base, "metrics_port": 0, "metrics_host": "0.0.0.0"}
        TlserveServer(ServerSettings(**open_metrics)).store.close()  # type: ignore[arg-type]
    assert "metrics on 0.0.0.0:0 are plaintext" in caplog.text


def test_the_server_command_says_what_to_set(tmp_path: Path) -> None:
    env = {**os.environ, "TLSERVE_HOST": "0.0.0.0", "TLSERVE_DATA_DIR": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-m", "tlserve.server.main", "--port", "0", "--metrics-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert completed.returncode == 2
    assert "refusing to serve on 0.0.0.0" in completed.stderr
    assert "TLSERVE_INSECURE" in completed.stderr and "Traceback" not in completed.stderr


def test_weak_or_malformed_credentials_are_refused_atserve_colour_model(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path, "port": 0, "http_port": None, "metrics_port": None}
    with pytest.raises(ValueError, match="at least 16 characters"):
        TlserveServer(ServerSettings(**base, admin_tokens="short"))  # type: ignore[arg-type]
    tokens = tmp_path / "tokens"
    tokens.write_text("superuser some-long-token-0123456789\n")
    with pytest.raises(ValueError, match="line 1: unknown role"):
        TlserveServer(ServerSettings(**base, tokens_file=tokens))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot read"):
        TlserveServer(ServerSettings(**base, tokens_file=tmp_path / "missing"))  # type: ignore[arg-type]


def test_admin_calls_are_refused_until_an_admin_credential_exists(tmp_path: Path) -> None:
    server = serve_colour_model(tmp_path)  # zero-config loopback: predict and label are open
    try:
        with TlserveClient(server.target) as client:
            assert client.predict_one(solid_image("red")).label == "red"
            client.submit_feedback("red", image=solid_image("red"))
            with pytest.raises(errors.Unauthenticated, match="TLSERVE_ADMIN_TOKENS"):
                client.trigger_training()
    finally:
        server.stop()


def test_tokens_file_with_digests_and_rotation(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    digest = hashlib.sha256(ADMIN.encode()).hexdigest()
    tokens.write_text(f"# role token name\nadmin sha256:{digest} ops\nlabel {LABEL}\n")
    server = serve_colour_model(tmp_path, tokens_file=tokens, credentials_check_seconds=0.0)
    try:
        with TlserveClient(server.target, token=ADMIN) as client:
            assert client.trigger_training("via the file") >= 1
        rotated = tmp_path / "tokens.new"
        rotated.write_text(f"label {LABEL}\n")
        rotated.replace(tokens)
        with (
            TlserveClient(server.target, token=ADMIN) as client,
            pytest.raises(errors.Unauthenticated),
        ):
            client.trigger_training()
    finally:
        server.stop()


def test_bind_addresses_and_reflection_are_settings(tmp_path: Path) -> None:
    server = serve_colour_model(
        tmp_path, metrics_host="127.0.0.2", http_host="127.0.0.3", reflection=False
    )
    try:
        assert server.server is not None
        metrics = server.server.metrics_port
        assert http_call(f"http://127.0.0.2:{metrics}/metrics").status == 200
        with pytest.raises(urllib.error.URLError):
            http_call(f"http://127.0.0.1:{metrics}/metrics", timeout=2)
        live = http_call(f"http://127.0.0.3:{server.server.http_port}/v2/health/live")
        assert live.status == 200
        with grpc.insecure_channel(server.target) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            with pytest.raises(grpc.RpcError) as off:
                list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop()


def test_errors_never_show_server_paths(tmp_path: Path) -> None:
    registry = Registry.local(tmp_path / "registry")
    good = publish_colour_version(registry)
    broken = publish_colour_version(registry, make_current=False, parent=good)
    (tmp_path / "registry" / "versions" / broken / "head.onnx").write_bytes(b"not onnx")
    server = ServerThread(tmp_path, admin_tokens=ADMIN).start()
    messages = []
    try:
        with TlserveClient(server.target, token=ADMIN) as client:
            for attempt in (
                lambda: client.rollback(broken),
                lambda: client.get_model("20990101-000000-000000-0000"),
                lambda: client.get_model("../../etc"),
                lambda: client.predict([b"junk"]),
            ):
                with pytest.raises(errors.ApiError) as refused:
                    attempt()
                messages.append(refused.value.message)
        for path in ("/registry", "/some", "/etc"):
            assert http_call(f"{server.http_url}/v1/models/{path}").status in (404, 401)
    finally:
        server.stop()
    assert messages and not any(str(tmp_path) in m or "/tmp/" in m for m in messages), messages


def test_an_expired_server_certificate_is_warned_about_at_start(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A server whose certificate had expired started silently; every client then failed
    its handshake with nothing in the server's log to say why."""
    caplog.set_level(logging.WARNING, logger="tlserve.server.security.tls")
    for certificate, said in (
        (pki.server, None),
        (pki.ca.server("old", expired=True), "expired on"),
    ):
        caplog.clear()
        server = serve_colour_model(
            tmp_path / certificate.cert.stem,
            tls_cert_file=certificate.cert,
            tls_key_file=certificate.key,
            admin_tokens=ADMIN,
        )
        server.stop()
        warnings = [r.getMessage() for r in caplog.records if "TLS certificate" in r.getMessage()]
        if said is None:
            assert warnings == []
        else:
            assert (
                len(warnings) == 1 and said in warnings[0] and str(certificate.cert) in warnings[0]
            )


@pytest.mark.parametrize("years", [1, 40])
def test_certificate_validity_is_read_as_x509_says(tmp_path: Path, years: int) -> None:
    """UTCTime (before 2050) and GeneralizedTime (from 2050) both, checked against the
    cryptography package's own reading."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    start = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365 * years))
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    validity = first_certificate_validity(pem + pem)  # a chain: the first one counts
    assert validity.not_before == certificate.not_valid_before_utc
    assert validity.not_after == certificate.not_valid_after_utc
    assert validity.problem(start + datetime.timedelta(days=1)) is None
    assert "expired" in (
        validity.problem(certificate.not_valid_after_utc + datetime.timedelta(1)) or ""
    )
    with pytest.raises(NotACertificate):
        first_certificate_validity(b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----")
