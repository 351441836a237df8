"""Shutdown under load, on each store, as a container runtime does it: SIGTERM to a server
process while clients predict and send feedback in a loop.

The drain lets every request the server admitted finish; anything it refuses is
UNAVAILABLE (which clients retry, on another replica), never CANCELLED or INTERNAL; it
stops as soon as the admitted work is done, however busy the clients keep it; and
readiness turns NOT_SERVING while the listeners are still open.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from examples.colour_model import publish_colour_version
from tests.support import Load, ServerProcess, postgres_or_skip
from tlserve.server.registry import Registry

CLIENTS = 16
GRACE_SECONDS = 10.0


def _store_url(store: str) -> str:
    return postgres_or_skip() if store == "postgres" else ""


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_sigterm_under_load_refuses_only_with_unavailable(tmp_path: Path, store: str) -> None:
    """Three drains under clients that keep sending through the refusals: every answer is
    OK or UNAVAILABLE, and each drain ends long before its grace period, because refused
    requests are not work the drain waits for."""
    publish_colour_version(Registry.local(tmp_path / "registry"))
    store_url = _store_url(store)
    for round_ in range(3):
        server = ServerProcess(
            tmp_path, store_url=store_url, drain_seconds=GRACE_SECONDS, log_level="INFO"
        )
        with server.start():
            load = Load(server.target).start(CLIENTS)
            time.sleep(1.0)
            served_before = load.codes["OK"]
            signalled = time.monotonic()
            server.terminate()
            assert server.wait(GRACE_SECONDS + 20) == 0, server.output()
            drained = time.monotonic() - signalled
            time.sleep(0.3)  # the clients meet the closed port too
            codes = load.stop()
        assert served_before > 20, codes
        assert set(codes) <= {"OK", "UNAVAILABLE"}, (round_, codes, load.surprises)
        assert codes["UNAVAILABLE"] > 0, codes  # the load outlived the server
        # The server waits for admitted work, not for the clients to go quiet.
        assert drained < GRACE_SECONDS / 2, (drained, server.output()[-3000:])


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_sigterm_loses_nothing_for_retrying_clients(tmp_path: Path, store: str) -> None:
    """Two replicas behind one target (the clients' round robin, as over a headless
    Service): SIGTERM to one under load fails no request of retrying clients, and that
    replica reports NOT_SERVING before its listeners close."""
    registry = tmp_path / "registry"
    publish_colour_version(Registry.local(registry))
    store_url = _store_url(store)
    settings = {"store_url": store_url, "registry_dir": registry, "drain_seconds": GRACE_SECONDS}
    leaving = ServerProcess(tmp_path / "a", **settings)
    staying = ServerProcess(tmp_path / "b", **settings)
    with leaving.start(), staying.start():
        seen: list[tuple[float, str]] = []
        watching = threading.Event()

        def watch_readiness() -> None:
            while not watching.is_set():
                seen.append((time.monotonic(), leaving.readiness(timeout=0.5)))
                time.sleep(0.005)

        load = Load(f"ipv4:{leaving.target},{staying.target}", retries=5).start(CLIENTS)
        watcher = threading.Thread(target=watch_readiness)
        watcher.start()
        time.sleep(1.0)
        leaving.terminate()
        assert leaving.wait(GRACE_SECONDS + 20) == 0, leaving.output()
        time.sleep(0.5)  # and the load goes on against the replica that stays
        codes = load.stop()
        watching.set()
        watcher.join(10)
    assert set(codes) == {"OK"}, (codes, load.surprises)
    states = [state for _, state in seen]
    assert "NOT_SERVING" in states, Counter(states)
    first_not_serving = states.index("NOT_SERVING")
    assert "UNREACHABLE" in states[first_not_serving:], Counter(states)
    assert "SERVING" not in states[first_not_serving:]
