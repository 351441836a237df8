"""Shutdown under load, on each store: SIGTERM's drain lets every request the server had
received finish; anything refused is UNAVAILABLE (which clients retry elsewhere), never
CANCELLED or INTERNAL."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from examples.colour_model import publish_colour_version
from tests.support import ServerThread, solid_image
from tests.test_store import postgres_or_skip
from tlserve.clients import TlserveClient, errors
from tlserve.server.registry import Registry

CLIENTS = 24


@dataclass(frozen=True)
class Attempt:
    started: float
    finished: float
    code: str  # "OK" or the status name


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_sigterm_drain_with_busy_clients(tmp_path: Path, store: str) -> None:
    store_url = postgres_or_skip() if store == "postgres" else ""
    publish_colour_version(Registry.local(tmp_path / "registry"))
    server = ServerThread(tmp_path, store_url=store_url, drain_seconds=10.0).start()
    attempts: list[Attempt] = []
    lock = threading.Lock()

    def client_loop(worker: int) -> None:
        with TlserveClient(server.target, retries=0, timeout=20) as client:
            for n in range(10_000):
                started = time.monotonic()
                try:
                    if n % 2:
                        image = solid_image("red", (20 + worker, 20 + n % 50))
                        client.submit_feedback("red", image=image, idempotency_key=f"{worker}-{n}")
                    else:
                        client.predict([solid_image("blue")])
                    code = "OK"
                except errors.ApiError as exc:
                    code = exc.status.name
                with lock:
                    attempts.append(Attempt(started, time.monotonic(), code))
                if code != "OK":
                    return  # the server is going away

    workers = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)
    assert server.server is not None
    stop_began = time.monotonic()
    # What SIGTERM does (server.main): the same drain, with the configured grace.
    server.run(server.server.stop(), timeout=30)
    drained = time.monotonic() - stop_began
    for worker in workers:
        worker.join(30)
    server.loop.call_soon_threadsafe(server.loop.stop)

    codes = {a.code for a in attempts}
    assert codes <= {"OK", "UNAVAILABLE"}, codes
    in_flight = [a for a in attempts if a.started < stop_began < a.finished]
    assert in_flight, "the stop should have caught requests in flight"
    # A request sent a moment before the stop may still reach a closing listener and be
    # refused; everything the server had for longer than that completes.
    received = [a for a in attempts if a.started < stop_began - 0.05]
    assert all(a.code == "OK" for a in received), [a for a in received if a.code != "OK"]
    assert drained < 10.0
    assert len([a for a in attempts if a.code == "OK"]) > 50


def test_new_requests_during_the_drain_get_unavailable(tmp_path: Path) -> None:
    publish_colour_version(Registry.local(tmp_path / "registry"))
    server = ServerThread(tmp_path, drain_seconds=5.0).start()
    assert server.server is not None
    server.server.core.draining = True  # the state stop() enters before closing listeners
    try:
        with TlserveClient(server.target, retries=0) as client:
            with pytest.raises(errors.Unavailable) as refused:
                client.predict([solid_image("red")])
            assert refused.value.retry_after is not None
    finally:
        server.server.core.draining = False
        server.stop()
