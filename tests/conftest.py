from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.colour_model import publish_colour_version
from tests.s3 import MotoServer
from tests.support import ServerThread
from tlserve.server.registry import Registry


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry.local(tmp_path / "registry")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerThread]:
    """A running server with one colour model published and loaded."""
    registry = Registry.local(tmp_path / "registry")
    publish_colour_version(registry)
    server = ServerThread(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[ServerThread]:
    """A running server whose registry has no version yet."""
    server = ServerThread(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ConvNet pretrained on half the MNIST digits (TensorFlow; the slow tests share it)."""
    from tlserve.trainer.backbones import card_path  # noqa: PLC0415 (TensorFlow, when asked)
    from tlserve.trainer.pretrain import pretrain_digits  # noqa: PLC0415

    target = tmp_path_factory.mktemp("pretrained") / "mnist_convnet.keras"
    report = pretrain_digits(target)
    assert report["source_validation_accuracy"] > 0.9
    card = json.loads(card_path(target).read_text())
    assert card["digits"] == list(range(10)) and card["source_rows"] == 2500
    return target


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """A real S3 protocol server (moto's standalone server), one per test session."""
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()
