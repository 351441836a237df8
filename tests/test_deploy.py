"""The Kubernetes manifests parse, and agree with the server about ports and probe services."""

from __future__ import annotations

from pathlib import Path

import yaml

from tlserve.server.api.http import LIVE_PATH, READY_PATH
from tlserve.server.settings import ServerSettings

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


def documents() -> list[dict]:  # type: ignore[type-arg]
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def test_manifests_parse_and_cover_the_deployment() -> None:
    kinds = {(doc["kind"], doc.get("metadata", {}).get("name")) for doc in documents()}
    for expected in [
        ("Deployment", "tlserve-server"),
        ("Deployment", "tlserve-trainer"),
        ("HorizontalPodAutoscaler", "tlserve-server"),
        ("PodDisruptionBudget", "tlserve-server"),
        ("StatefulSet", "postgres"),
        ("PersistentVolumeClaim", "registry"),
    ]:
        assert expected in kinds


def test_server_probes_and_ports_match_the_code() -> None:
    server = next(
        doc
        for doc in documents()
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "tlserve-server"
    )
    container = server["spec"]["template"]["spec"]["containers"][0]
    defaults = ServerSettings()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "grpc": defaults.port,
        "http": defaults.http_port,
        "metrics": defaults.metrics_port,
    }
    # Probes go to the HTTP API (the kubelet's gRPC probe cannot do TLS).
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (live["port"], live["path"], live["scheme"]) == ("http", "/v2/health/live", "HTTPS")
    assert (ready["port"], ready["path"]) == ("http", "/v2/health/ready")
    assert (live["path"], ready["path"]) == (LIVE_PATH, READY_PATH)


def test_credentials_come_from_secrets_the_user_creates() -> None:
    docs = documents()
    assert not [doc for doc in docs if doc["kind"] == "Secret"], "no Secret is committed"
    server = next(
        d for d in docs if d["kind"] == "Deployment" and "server" in d["metadata"]["name"]
    )
    pod = server["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"tls": "tlserve-tls", "tokens": "tlserve-tokens"}
    assert env["TLSERVE_TLS_CERT_FILE"].startswith(mounts["tls"] + "/")
    assert env["TLSERVE_TLS_KEY_FILE"].startswith(mounts["tls"] + "/")
    assert env["TLSERVE_TOKENS_FILE"].startswith(mounts["tokens"] + "/")
    assert env["TLSERVE_HOST"] == "0.0.0.0"


def test_network_policies_name_ports_the_pods_have() -> None:
    docs = documents()
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"tlserve-server", "tlserve-trainer", "postgres"}
    server = next(
        d for d in docs if d["kind"] == "Deployment" and "server" in d["metadata"]["name"]
    )
    named = {p["name"] for p in server["spec"]["template"]["spec"]["containers"][0]["ports"]}
    allowed = {
        port["port"]
        for rule in policies["tlserve-server"]["spec"]["ingress"]
        for port in rule["ports"]
    }
    assert allowed == named == {"grpc", "http", "metrics"}
