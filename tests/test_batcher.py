"""The dynamic batcher on its own: flush on size and on deadline, bounded queue, isolation."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tlserve.server.batcher import DynamicBatcher
from tlserve.server.errors import Overloaded, Unavailable


class Recorder:
    """The batch function: records batches; `gate` holds a batch until set, `running` is set
    once one has started, `depth` follows the queued items (the batcher's on_depth)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Event()
        self.depth = 0
        self._depth_changed = asyncio.Condition()

    def __call__(self, key: str, items: list[int]) -> list[int]:
        self.running.set()
        self.gate.wait(5)
        time.sleep(self.delay)
        if any(item < 0 for item in items):
            raise ValueError("negative item")
        self.batches.append((key, list(items)))
        return [item * 10 for item in items]

    def on_depth(self, depth: int) -> None:
        """Called on the event loop whenever the queue's item count changes."""
        self.depth = depth
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._depth_changed:
            self._depth_changed.notify_all()

    async def until_running(self) -> None:
        """Until a batch has started (and, with the gate clear, holds the worker)."""
        assert await asyncio.to_thread(self.running.wait, 5), "no batch started"

    async def until_queued(self, items: int) -> None:
        async with self._depth_changed:
            await asyncio.wait_for(
                self._depth_changed.wait_for(lambda: self.depth == items), timeout=5
            )


def make(recorder: Recorder, **kwargs: float) -> DynamicBatcher[str, int, int]:
    options = {"max_batch_size": 4, "max_delay_seconds": 0.05, "max_queue_items": 100, **kwargs}
    return DynamicBatcher(
        recorder,  # type: ignore[arg-type]
        ThreadPoolExecutor(1),
        on_depth=recorder.on_depth,
        **options,  # type: ignore[arg-type]
    )


async def test_results_come_back_in_order_per_request() -> None:
    recorder = Recorder()
    batcher = make(recorder)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit("m", [i, i + 100]) for i in range(5)))
    assert results == [[i * 10, (i + 100) * 10] for i in range(5)]
    await batcher.stop()


async def test_full_batch_flushes_before_the_deadline() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_delay_seconds=5.0)
    batcher.start()
    started = time.perf_counter()
    await asyncio.gather(*(batcher.submit("m", [i]) for i in range(4)))
    assert time.perf_counter() - started < 2.0
    assert [len(items) for _, items in recorder.batches] == [4]
    await batcher.stop()


async def test_partial_batch_flushes_at_the_deadline() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_delay_seconds=0.2)
    batcher.start()
    started = time.perf_counter()
    assert await batcher.submit("m", [7]) == [70]
    assert time.perf_counter() - started >= 0.19
    await batcher.stop()


async def test_requests_queued_while_busy_are_batched_together() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = make(recorder, max_delay_seconds=0.0)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit("m", [0]))
    await recorder.until_running()
    rest = [asyncio.ensure_future(batcher.submit("m", [i])) for i in range(1, 4)]
    await recorder.until_queued(3)
    recorder.gate.set()
    await asyncio.gather(first, *rest)
    assert [items for _, items in recorder.batches] == [[0], [1, 2, 3]]
    await batcher.stop()


async def test_keys_never_share_a_batch() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_delay_seconds=0.05)
    batcher.start()
    await asyncio.gather(
        batcher.submit("a", [1]), batcher.submit("b", [2]), batcher.submit("a", [3])
    )
    for key, items in recorder.batches:
        assert all((item in (1, 3)) == (key == "a") for item in items)
    await batcher.stop()


async def test_oversized_request_is_split_into_max_size_batches() -> None:
    recorder = Recorder()
    batcher = make(recorder)
    batcher.start()
    assert await batcher.submit("m", list(range(10))) == [i * 10 for i in range(10)]
    assert all(len(items) <= 4 for _, items in recorder.batches)
    await batcher.stop()


async def test_full_queue_refuses_at_once() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = make(recorder, max_queue_items=3, max_delay_seconds=0.0)
    batcher.start()
    running = asyncio.ensure_future(batcher.submit("m", [1]))
    await recorder.until_running()  # the worker holds [1]; the queue is empty again
    queued = asyncio.ensure_future(batcher.submit("m", [2, 3, 4]))
    await recorder.until_queued(3)
    started = time.perf_counter()
    with pytest.raises(Overloaded, match="queue is full"):
        await batcher.submit("m", [5])
    assert time.perf_counter() - started < 0.05
    recorder.gate.set()
    assert await queued == [20, 30, 40] and await running == [10]
    await batcher.stop()


async def test_a_failing_batch_fails_only_its_own_requests() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=1)
    batcher.start()
    good, bad = await asyncio.gather(
        batcher.submit("m", [1]), batcher.submit("m", [-1]), return_exceptions=True
    )
    assert good == [10]
    assert isinstance(bad, ValueError)
    assert await batcher.submit("m", [2]) == [20]
    await batcher.stop()


async def test_cancelled_requests_are_skipped() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = make(recorder, max_delay_seconds=0.0)
    batcher.start()
    busy = asyncio.ensure_future(batcher.submit("m", [1]))
    await recorder.until_running()
    abandoned = asyncio.ensure_future(batcher.submit("m", [2]))
    await recorder.until_queued(1)
    abandoned.cancel()
    kept = asyncio.ensure_future(batcher.submit("m", [3]))
    recorder.gate.set()
    assert await kept == [30] and await busy == [10]
    assert all(2 not in items for _, items in recorder.batches)
    await batcher.stop()


async def test_stop_finishes_queued_work_then_refuses() -> None:
    recorder = Recorder(delay=0.02)
    batcher = make(recorder, max_batch_size=1)
    batcher.start()
    pending = [asyncio.ensure_future(batcher.submit("m", [i])) for i in range(3)]
    await asyncio.sleep(0)
    await batcher.stop()
    assert [await p for p in pending] == [[0], [10], [20]]
    with pytest.raises(Unavailable):
        await batcher.submit("m", [1])
