"""The Kubernetes manifests parse, and agree with the server about ports and probe services."""

from __future__ import annotations

from pathlib import Path

import yaml

from tlserve.server.app import LIVENESS_SERVICE
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
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert container["readinessProbe"]["grpc"]["port"] == defaults.port
