from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.colour_model import publish_colour_version
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
