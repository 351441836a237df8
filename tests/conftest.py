from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.colour_model import publish_colour_version
from tests.certs import Pki
from tests.s3 import MotoServer
from tests.support import ADMIN, LABEL, PREDICT, ServerThread, serve_colour_model
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


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates made here: a CA, the server's, clients' and a stranger's."""
    return Pki.made_in(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki) -> Iterator[ServerThread]:
    """TLS and tokens of every role, no client certificates."""
    server = serve_colour_model(
        tmp_path,
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
        predict_tokens=PREDICT,
        label_tokens=LABEL,
        admin_tokens=ADMIN,
        credentials_check_seconds=0.0,
    )
    yield server
    server.stop()
