"""Hot swap under load: no failed request, and every answer comes from one complete version."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from examples.colour_model import publish_colour_version
from tests.support import ServerThread, solid_image
from tlserve.clients import TlserveClient
from tlserve.server.metrics import ServerMetrics
from tlserve.server.model_slot import ModelLoader, ModelSlot
from tlserve.server.registry import Registry
from tlserve.server.runtime import SessionFactory

# Version "straight" answers each colour with its own name, "rotated" answers red with
# blue and so on; a response mixing one version's backbone with another's head, or
# naming the wrong version, would break the pairing checked below.
ROTATED = {"red": "blue", "green": "red", "blue": "green"}


@pytest.mark.slow  # seconds of load
def test_twenty_swaps_under_concurrent_load(tmp_path: Path) -> None:
    registry = Registry.local(tmp_path / "registry")
    expected: dict[str, dict[str, str]] = {}
    first = publish_colour_version(registry)
    expected[first] = {c: c for c in ROTATED}
    server = ServerThread(tmp_path, max_queue_delay_ms=1.0).start()
    failures: list[BaseException] = []
    answers: list[tuple[str, str, str]] = []
    stop = threading.Event()

    def load(colour: str) -> None:
        image = solid_image(colour)
        with TlserveClient(server.target, timeout=10) as client:
            while not stop.is_set():
                try:
                    result = client.predict([image, image])
                except grpc.RpcError as exc:
                    failures.append(exc)
                    continue
                for prediction in result.predictions:
                    answers.append((result.model_version, colour, prediction.label))

    workers = [threading.Thread(target=load, args=(c,)) for c in ("red", "green", "blue") * 2]
    for worker in workers:
        worker.start()
    try:
        for swap in range(20):
            rotated = swap % 2 == 0
            # Every fourth version also brings a new backbone (another input size).
            size = 32 if swap % 4 else 40 + swap
            version = publish_colour_version(
                registry, answer_for=ROTATED if rotated else None, size=size
            )
            expected[version] = ROTATED if rotated else {c: c for c in ROTATED}
            server.wait_for_version(version)
            time.sleep(0.05)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        # Read while it serves: a stopped server's models, and their series, are gone.
        swaps = {
            result: server.metrics_registry.get_sample_value(
                "tlserve_model_swaps_total", {"model": "tlserve", "result": result}
            )
            or 0
            for result in ("full", "head_only")
        }
        server.stop()
    assert failures == []
    served_versions = {version for version, _, _ in answers}
    assert len(served_versions) >= 15, "load should have seen most versions"
    wrong = [(v, c, label) for v, c, label in answers if expected[v][c] != label]
    assert wrong == []
    assert swaps["full"] + swaps["head_only"] == 21
    assert swaps["head_only"] >= 10


def test_old_version_drains_before_release(tmp_path: Path) -> None:
    registry = Registry.local(tmp_path / "registry")
    first = publish_colour_version(registry)
    slot = ModelSlot(
        registry,
        ModelLoader(registry, SessionFactory("cpu", 1), warmup_batch=2),
        ServerMetrics(CollectorRegistry()),
    )
    asyncio.run(slot.refresh())
    with slot.lease() as old:
        assert old.version == first
        second = publish_colour_version(registry, size=48)
        assert asyncio.run(slot.refresh())
        assert slot.current is not None and slot.current.version == second
        assert not old.wait_drained(0.05), "a leased version must not be released"
        features = old.backbone.features(np.zeros((1, 32, 32, 3), dtype=np.uint8))
        assert features.shape == (1, 3)
    assert old.wait_drained(1.0)


@pytest.mark.parametrize(
    "damage",
    ["hash", "labels", "missing_backbone", "bad_onnx"],
)
def test_bad_version_is_refused_and_the_old_one_keeps_serving(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "registry"
    registry = Registry.local(root)
    good = publish_colour_version(registry)
    server = ServerThread(tmp_path).start()
    try:
        bad = publish_colour_version(registry, make_current=False, size=36)
        directory = root / "versions" / bad
        manifest = registry.model_manifest(bad)
        if damage == "hash":
            (directory / "head.onnx").write_bytes(
                (directory / "head.onnx").read_bytes()[:-1] + b"x"
            )
        elif damage == "labels":
            text = (directory / "model.json").read_text()
            (directory / "model.json").write_text(text.replace('"blue"', '"blue", "purple"', 1))
        elif damage == "missing_backbone":
            shutil.rmtree(root / "backbones" / manifest.backbone_id)
        else:
            backbone_file = root / "backbones" / manifest.backbone_id / "backbone.onnx"
            backbone_file.write_bytes(b"not onnx")
        registry.set_current(bad) if damage != "labels" else (root / "CURRENT").write_text(bad)
        deadline = time.monotonic() + 10
        refused = server.metrics_registry.get_sample_value
        while (
            refused("tlserve_model_swaps_total", {"model": "tlserve", "result": "refused"}) or 0
        ) < 1:
            assert time.monotonic() < deadline, "the bad version was never refused"
            time.sleep(0.02)
        time.sleep(0.3)  # several polls: the refusal is not retried in a tight loop
        assert refused("tlserve_model_swaps_total", {"model": "tlserve", "result": "refused"}) == 1
        with TlserveClient(server.target) as client:
            result = client.predict([solid_image("red")])
        assert result.model_version == good and result.predictions[0].label == "red"
    finally:
        server.stop()


@pytest.mark.parametrize(
    "content", [b"", b"../..\n", b"\xff\xfe\n", b"20990101-000000-000000-dead\n"]
)
def test_a_bad_current_is_reported_once_and_the_old_version_keeps_serving(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "registry"
    registry = Registry.local(root)
    good = publish_colour_version(registry)
    server = ServerThread(tmp_path).start()
    try:
        caplog.set_level(logging.INFO, logger="tlserve.server.model_slot")
        # Replaced whole, as any writer must: a truncate-then-write would show the
        # server an empty CURRENT for a moment (a second, different problem).
        (root / "CURRENT.new").write_bytes(content)
        (root / "CURRENT.new").replace(root / "CURRENT")
        time.sleep(0.5)  # ten polls
        problems = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(problems) == 1, [r.getMessage() for r in problems]
        assert problems[0].exc_info is None and f"still serving {good}" in problems[0].getMessage()
        value = server.metrics_registry.get_sample_value
        problem_metric = value("tlserve_registry_current_problems_total") or 0
        refused_metric = (
            value("tlserve_model_swaps_total", {"model": "tlserve", "result": "refused"}) or 0
        )
        assert problem_metric + refused_metric == 1
        with TlserveClient(server.target) as client:
            assert client.predict_one(solid_image("red")).label == "red"
            models, _ = client.list_models()
            assert [m.version for m in models] == [good] and models[0].serving
        registry.set_current(good)
        newer = publish_colour_version(registry)
        server.wait_for_version(newer)
    finally:
        server.stop()
