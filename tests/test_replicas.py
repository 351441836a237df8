"""Several replicas, as a cluster runs them: PostgreSQL (a database of its own on this
machine's server), the registry on a real S3 protocol server (moto's), two
`tlserve-server` processes and two `tlserve-trainer run` processes.

Feedback sent to replica A produces exactly one new version per batch (one trainer
trains; the other finds the labels taken), both replicas serve it within seconds, and a
rollback sent to replica B reaches A.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples.odd_even import Task, parity, png
from tests.s3 import MotoServer
from tests.support import POSTGRES_DSN, free_port, http_call, postgres_or_skip
from tlserve.clients import TlserveClient
from tlserve.trainer.pretrain import CUT_LAYER

pytestmark = pytest.mark.slow  # TensorFlow in two trainer processes

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "admin-token-for-replicas-0123456789"
LABEL = "label-token-for-replicas-0123456789"
BATCH = 10


@dataclass
class Replica:
    name: str
    process: subprocess.Popen[bytes]
    grpc_port: int
    metrics_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@pytest.fixture
def database() -> Iterator[str]:
    postgres_or_skip()
    name = f"tlserve_replicas_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield POSTGRES_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def cluster(
    tmp_path: Path, pretrained: Path, database: str, moto: MotoServer
) -> Iterator[tuple[list[Replica], list[Replica]]]:
    shared = {
        **moto.environment(),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TLSERVE_STORE_URL": database,
        "TLSERVE_REGISTRY_URL": f"s3://{moto.new_bucket()}/tlserve",
        "TLSERVE_ADMIN_TOKENS": ADMIN,
        "TLSERVE_LABEL_TOKENS": LABEL,
        # One labeler teaches the classes (a quarantine would wait for five).
        "TLSERVE_NEW_CLASS_POLICY": "open",
        "TLSERVE_HOST": "127.0.0.1",
        "TLSERVE_REGISTRY_POLL_SECONDS": "0.2",
        "TLSERVE_KEEP_MAX_PER_SECOND": "0",
        "TLSERVE_LOG_LEVEL": "WARNING",
        "TLSERVE_BACKBONE": str(pretrained),
        "TLSERVE_BACKBONE_CUT_LAYER": CUT_LAYER,
        "TLSERVE_BACKBONE_WEIGHTS": "none",
        "TLSERVE_MIN_NEW_LABELS": str(BATCH),
        "TLSERVE_POLL_SECONDS": "0.2",
    }
    started: list[Replica] = []

    def start(name: str, module: str, *args: str) -> Replica:
        grpc_port, metrics_port = free_port(), free_port()
        env = {
            **shared,
            "TLSERVE_DATA_DIR": str(tmp_path / name),  # each pod's own disk (model cache)
            "TLSERVE_PORT": str(grpc_port),
            "TLSERVE_HTTP_PORT": "none",
            "TLSERVE_METRICS_PORT": str(metrics_port),
        }
        process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env)
        replica = Replica(name, process, grpc_port, metrics_port)
        started.append(replica)
        return replica

    servers = [start(f"server-{n}", "tlserve.server.main") for n in "ab"]
    trainers = [start(f"trainer-{n}", "tlserve.trainer.main", "run") for n in "ab"]
    try:
        yield servers, trainers
    finally:
        for replica in started:
            replica.process.send_signal(signal.SIGTERM)
        codes = {r.name: r.process.wait(60) for r in started}
        assert all(code == 0 for code in codes.values()), codes


def _served(replica: Replica) -> str | None:
    with TlserveClient(replica.target, token=LABEL, timeout=5, retries=0) as client:
        try:
            return client.get_model().version
        except Exception:
            return None


def _until(
    what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], None]
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        alive()
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def _promotions(trainers: list[Replica]) -> list[float]:
    counts = []
    for trainer in trainers:
        text = http_call(f"http://127.0.0.1:{trainer.metrics_port}/metrics").body.decode()
        promoted = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "tlserve_trainer_runs_total" and sample.labels == {
                    "model": "tlserve",
                    "result": "promoted",
                }:
                    promoted = sample.value
        counts.append(promoted)
    return counts


@pytest.mark.timeout(900)
def test_two_servers_two_trainers_on_postgres_and_s3(
    cluster: tuple[list[Replica], list[Replica]],
) -> None:
    servers, trainers = cluster
    a, b = servers

    def alive() -> None:
        for replica in [*servers, *trainers]:
            if replica.process.poll() is not None:
                raise AssertionError(f"{replica.name} exited with {replica.process.returncode}")

    task = Task.load()
    pool = iter(task.pool)
    for server in servers:
        with TlserveClient(server.target) as client:
            client.wait_ready(60)
    versions: list[str] = []
    for batch in range(2):
        with TlserveClient(a.target, token=LABEL, timeout=60) as client:
            for _ in range(BATCH):
                index = next(pool)
                client.submit_feedback(parity(task.digits[index]), image=png(task.images[index]))
        _until(
            f"batch {batch}: a new version on both replicas",
            lambda: _served(a) == _served(b) not in (None, *versions),
            180,
            alive,
        )
        versions.append(str(_served(a)))
        # Time for the other trainer to take the lock and find nothing left to do.
        time.sleep(3)
        with TlserveClient(b.target, token=ADMIN) as client:
            models, _ = client.list_models()
            listed = [m.version for m in models]
        # One version per batch: the second trainer found the labels taken.
        assert sorted(listed) == sorted(versions)
    assert sum(_promotions(trainers)) == 2

    with TlserveClient(b.target, token=ADMIN) as admin:
        _, now_current = admin.rollback(versions[0])
    assert now_current == versions[0]
    seconds = _until("the rollback reaches replica A", lambda: _served(a) == versions[0], 10, alive)
    print(f"\nrollback on B served by A after {seconds:.2f}s")
