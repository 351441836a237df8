"""`make deploy-check` (python -m scripts.deploy_check): build the images and run several
replicas in containers.

Needs root and a Docker engine (Debian's docker.io: `dockerd` is started here when it is
installed and not running) and debootstrap, because no container registry is reachable:
the base image is Debian bookworm made by `deploy/check/base-image.sh`.

Steps, each timed and printed as a table (and written to build/deploy-check.json):
  1. images: the base, tlserve-server, tlserve-trainer, and PostgreSQL and moto's S3
     server for the check (with --gpu also tlserve-server-gpu, whose build fails if the
     CPU onnxruntime wheel is beside onnxruntime-gpu);
  2. the server image with no volume and no settings but TLSERVE_INSECURE becomes healthy
     as its non-root user (uid 10001), writing only its own /data;
  3. on one private network: PostgreSQL (password auth), the S3 server, two servers and a
     trainer on the registry in S3, using a backbone pretrained here on MNIST;
  4. labels sent to server A make a version that both servers serve, twice; a rollback
     sent to server B reaches A;
  5. no container ran as root, and nothing under the tlserve containers' /data belongs
     to anyone but uid 10001.
Containers and the network are removed at the end, unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from examples.odd_even import Task, parity, png
from tlserve.clients import TlserveClient

ROOT = Path(__file__).resolve().parents[1]
BASE = "tlserve-base:bookworm"
TAG = "check"
PREFIX = "tlserve-check"
NETWORK = f"{PREFIX}-net"
BATCH = 10
LABEL = secrets.token_hex(16)
ADMIN = secrets.token_hex(16)
IMAGE_UID = "10001"


class CheckFailed(Exception):
    pass


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise CheckFailed(f"docker {' '.join(args[:3])}…: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def ensure_engine() -> None:
    if os.geteuid() != 0:
        raise CheckFailed("run as root: the check drives a private dockerd and debootstrap")
    missing = [tool for tool in ("docker", "debootstrap") if shutil.which(tool) is None]
    if missing:
        raise CheckFailed(f"missing {', '.join(missing)}: apt-get install docker.io debootstrap")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0:
        return
    if shutil.which("dockerd") is None:
        raise CheckFailed("no Docker engine: apt-get install docker.io")
    log = open("/var/log/tlserve-dockerd.log", "ab")  # noqa: SIM115 (outlives this process)
    subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    until(
        "dockerd answers",
        lambda: (
            subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
        ),
        60,
    )


def until(what: str, check: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.5)
    raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}")


def build(dockerfile: str, image: str) -> None:
    """The images from the repository as context; the check's own ones need none (their
    Dockerfile comes on stdin)."""
    command = ["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={BASE}", "-t", image]
    if dockerfile.startswith("deploy/docker/"):
        command += ["-f", str(ROOT / dockerfile), str(ROOT)]
        stdin = None
    else:
        command.append("-")
        stdin = (ROOT / dockerfile).read_text()
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CheckFailed(f"building {image} failed:\n{result.stderr[-4000:]}")


def health(name: str) -> str:
    return docker("inspect", "-f", "{{.State.Health.Status}}", name, check=False)


def running(name: str) -> bool:
    return docker("inspect", "-f", "{{.State.Running}}", name, check=False) == "true"


def published(name: str, port: int) -> str:
    return docker("port", name, f"{port}/tcp").splitlines()[0].replace("0.0.0.0", "127.0.0.1")


def healthy(name: str, timeout: float) -> float:
    def check() -> bool:
        if not running(name):
            logs = docker("logs", "--tail", "30", name, check=False)
            raise CheckFailed(f"{name} exited:\n{logs}")
        return health(name) == "healthy"

    return until(f"{name} healthy", check, timeout)


def run(name: str, image: str, *args: str, env: dict[str, str] | None = None) -> None:
    flags = [f"--env={key}={value}" for key, value in (env or {}).items()]
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        NETWORK,
        "--network-alias",
        name.removeprefix(f"{PREFIX}-"),
        *flags,
        *args,
        image,
    )


@contextmanager
def cleanup(keep: bool) -> Iterator[list[str]]:
    names: list[str] = []
    try:
        yield names
    finally:
        if not keep:
            for name in reversed(names):
                docker("rm", "-f", "-v", name, check=False)
            docker("network", "rm", NETWORK, check=False)


class Steps:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str]] = []

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        notes: list[str] = []
        started = time.monotonic()
        print(f"… {name}", flush=True)
        yield notes
        self.rows.append((name, time.monotonic() - started, "; ".join(notes)))

    def table(self) -> str:
        width = max(len(name) for name, _, _ in self.rows)
        lines = [f"{'step':<{width}}  {'seconds':>8}  result", "-" * (width + 30)]
        lines += [f"{n:<{width}}  {s:8.1f}  {note}" for n, s, note in self.rows]
        return "\n".join(lines)


def served(target: str) -> str | None:
    with TlserveClient(target, token=LABEL, timeout=5, retries=0) as client:
        try:
            return client.get_model().version
        except Exception:
            return None


def check(gpu: bool, keep: bool) -> Steps:
    steps = Steps()
    with steps.step("engine and base image") as notes:
        ensure_engine()
        subprocess.run([str(ROOT / "deploy/check/base-image.sh"), BASE], check=True)
        notes.append(BASE)
    images = {
        "server": ("deploy/docker/server.Dockerfile", f"tlserve-server:{TAG}"),
        "trainer": ("deploy/docker/trainer.Dockerfile", f"tlserve-trainer:{TAG}"),
        "postgres": ("deploy/check/postgres.Dockerfile", f"{PREFIX}-postgres:{TAG}"),
        "s3": ("deploy/check/s3.Dockerfile", f"{PREFIX}-s3:{TAG}"),
    }
    if gpu:
        images["server-gpu"] = ("deploy/docker/server-gpu.Dockerfile", f"tlserve-server-gpu:{TAG}")
    for what, (dockerfile, image) in images.items():
        with steps.step(f"build {what}") as notes:
            build(dockerfile, image)
            size = int(docker("image", "inspect", "-f", "{{.Size}}", image))
            notes.append(f"{image}, {size / 1e6:.0f} MB")

    scratch = Path(tempfile.mkdtemp(prefix="tlserve-deploy-check-"))
    with cleanup(keep) as names:
        docker("network", "rm", NETWORK, check=False)
        for leftover in docker("ps", "-aq", "--filter", f"name={PREFIX}-").split():
            docker("rm", "-f", "-v", leftover, check=False)
        docker("network", "create", NETWORK)

        with steps.step("server image, no volume: healthy as non-root") as notes:
            name = f"{PREFIX}-bare"
            names.append(name)
            run(name, images["server"][1], env={"TLSERVE_INSECURE": "true"})
            notes.append(f"healthy after {healthy(name, 90):.1f}s")
            uid = docker("exec", name, "id", "-u")
            if uid != IMAGE_UID:
                raise CheckFailed(f"the server runs as uid {uid}, not {IMAGE_UID}")
            notes.append(f"uid {uid}")

        with steps.step("backbone pretrained on MNIST (here)") as notes:
            backbone = scratch / "backbone"
            backbone.mkdir()
            pretrained = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tlserve.trainer.main",
                    "pretrain",
                    str(backbone / "mnist.keras"),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            report = json.loads(pretrained.stdout.strip().splitlines()[-1])
            backbone.chmod(0o755)
            (backbone / "mnist.keras").chmod(0o644)
            notes.append(f"mnist.keras, cut at {report['cut_layer']}")

        with steps.step("PostgreSQL and S3 server") as notes:
            password = secrets.token_hex(12)
            names += [f"{PREFIX}-postgres", f"{PREFIX}-s3"]
            run(
                f"{PREFIX}-postgres",
                images["postgres"][1],
                env={
                    "POSTGRES_USER": "tlserve",
                    "POSTGRES_DB": "tlserve",
                    "POSTGRES_PASSWORD": password,
                },
            )
            run(f"{PREFIX}-s3", images["s3"][1], "-p", "127.0.0.1::5000")
            notes.append(f"postgres healthy after {healthy(f'{PREFIX}-postgres', 120):.1f}s")
            s3 = boto3.client(
                "s3",
                endpoint_url=f"http://{published(f'{PREFIX}-s3', 5000)}",
                aws_access_key_id="check",
                aws_secret_access_key="check",
                region_name="us-east-1",
            )
            until("the S3 server", lambda: _answers(s3), 60)
            s3.create_bucket(Bucket="tlserve")
            notes.append("bucket tlserve")

        shared = {
            "TLSERVE_STORE_URL": f"postgresql://tlserve:{password}@postgres:5432/tlserve",
            "TLSERVE_REGISTRY_URL": "s3://tlserve/registry",
            "TLSERVE_S3_ENDPOINT_URL": "http://s3:5000",
            "AWS_ACCESS_KEY_ID": "check",
            "AWS_SECRET_ACCESS_KEY": "check",
            "AWS_DEFAULT_REGION": "us-east-1",
            "TLSERVE_REGISTRY_POLL_SECONDS": "0.5",
            "TLSERVE_LABEL_TOKENS": LABEL,
            "TLSERVE_ADMIN_TOKENS": ADMIN,
            # One labeling script teaches the classes: let them in as they come (the
            # quarantine's quorum counts distinct labelers).
            "TLSERVE_NEW_CLASS_POLICY": "open",
            # A private bridge network made for this check; real deployments use TLS.
            "TLSERVE_INSECURE": "true",
        }
        with steps.step("two servers and a trainer") as notes:
            for replica in ("server-a", "server-b"):
                names.append(f"{PREFIX}-{replica}")
                run(
                    f"{PREFIX}-{replica}", images["server"][1], "-p", "127.0.0.1::50051", env=shared
                )
            names.append(f"{PREFIX}-trainer")
            run(
                f"{PREFIX}-trainer",
                images["trainer"][1],
                "-v",
                f"{backbone}:/backbone:ro",
                env={
                    **shared,
                    "TLSERVE_BACKBONE": "/backbone/mnist.keras",
                    "TLSERVE_BACKBONE_CUT_LAYER": report["cut_layer"],
                    "TLSERVE_BACKBONE_WEIGHTS": "none",
                    "TLSERVE_MIN_NEW_LABELS": str(BATCH),
                    "TLSERVE_POLL_SECONDS": "1",
                },
            )
            for replica in ("server-a", "server-b", "trainer"):
                seconds = healthy(f"{PREFIX}-{replica}", 180)
                notes.append(f"{replica} {seconds:.0f}s")
        a = published(f"{PREFIX}-server-a", 50051)
        b = published(f"{PREFIX}-server-b", 50051)

        task = Task.load()
        pool = iter(task.pool)
        versions: list[str] = []
        for batch in range(2):
            with steps.step(f"batch {batch + 1}: {BATCH} labels to A, served by A and B") as notes:
                with TlserveClient(a, token=LABEL, timeout=60) as client:
                    for _ in range(BATCH):
                        index = next(pool)
                        client.submit_feedback(
                            parity(task.digits[index]), image=png(task.images[index])
                        )
                seconds = until(
                    "a new version on both servers",
                    lambda: served(a) == served(b) not in (None, *versions),
                    300,
                )
                versions.append(str(served(a)))
                notes.append(f"{versions[-1]} on both after {seconds:.1f}s")
        with steps.step("rollback sent to B reaches A") as notes:
            with TlserveClient(b, token=ADMIN, timeout=30) as admin:
                admin.rollback(versions[0])
            seconds = until(
                "A serving the rolled-back version", lambda: served(a) == versions[0], 30
            )
            notes.append(f"{versions[0]} on A after {seconds:.2f}s")

        with steps.step("non-root, and no foreign files in /data") as notes:
            for replica in ("server-a", "server-b", "trainer"):
                name = f"{PREFIX}-{replica}"
                uid = docker("exec", name, "id", "-u")
                foreign = docker("exec", name, "find", "/data", "!", "-uid", IMAGE_UID)
                if uid != IMAGE_UID or foreign:
                    raise CheckFailed(f"{name}: uid {uid}; not its own: {foreign}")
            notes.append(f"uid {IMAGE_UID} in all three")
    shutil.rmtree(scratch, ignore_errors=True)
    return steps


def _answers(s3: Any) -> bool:
    try:
        s3.list_buckets()
    except Exception:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="also build the GPU server image")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        steps = check(args.gpu, args.keep)
    except CheckFailed as exc:
        print(f"deploy-check: FAILED: {exc}", file=sys.stderr)
        return 1
    print(steps.table())
    output = ROOT / "build" / "deploy-check.json"
    output.parent.mkdir(exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "seconds": round(time.monotonic() - started, 1),
                "docker": docker("version", "-f", "{{.Server.Version}}"),
                "steps": [
                    {"step": n, "seconds": round(s, 1), "result": r} for n, s, r in steps.rows
                ],
            },
            indent=2,
        )
    )
    print(f"deploy-check: passed in {time.monotonic() - started:.0f}s ({output.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
