"""Dynamic batching: requests queue up, a worker runs them through the model together.

One future per request. A batch starts when it is full (`max_batch_size` images) or
when its oldest request has waited `max_delay`; it only holds requests with the same
key (the model version they leased), so versions never mix. A full queue refuses new
work at once instead of letting latency grow without bound. A failing batch fails only
the requests inside it. The model runs in an executor thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tlserve.server.errors import Overloaded, Unavailable

Key = TypeVar("Key")
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False)
class _Pending(Generic[Key, Item, Result]):
    key: Key
    items: list[Item]
    future: asyncio.Future[list[Result]]
    enqueued_at: float = field(default_factory=time.perf_counter)


class DynamicBatcher(Generic[Key, Item, Result]):
    def __init__(
        self,
        run_batch: Callable[[Key, list[Item]], Sequence[Result]],
        executor: Executor,
        *,
        max_batch_size: int,
        max_delay_seconds: float,
        max_queue_items: int,
        on_queue_wait: Callable[[float], None] | None = None,
        on_batch: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_seconds
        self.max_queue_items = max_queue_items
        self._on_queue_wait = on_queue_wait or (lambda _: None)
        self._on_batch = on_batch or (lambda _: None)
        self._on_depth = on_depth or (lambda _: None)
        self._queue: deque[_Pending[Key, Item, Result]] = deque()
        self._queued_items = 0
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="batcher")

    async def stop(self) -> None:
        """Refuse new work, finish what is queued, then end the worker."""
        self._closed = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
            self._worker = None

    async def submit(self, key: Key, items: list[Item]) -> list[Result]:
        """Run `items` through the model under `key`; results come back in order."""
        if self._closed:
            raise Unavailable("the server is shutting down; retry on another replica")
        if not items:
            return []
        if self._queued_items + len(items) > self.max_queue_items:
            raise Overloaded(
                f"the inference queue is full ({self._queued_items} images waiting, "
                f"limit {self.max_queue_items}); retry with backoff"
            )
        loop = asyncio.get_running_loop()
        chunks = [
            items[start : start + self.max_batch_size]
            for start in range(0, len(items), self.max_batch_size)
        ]
        pending = [_Pending(key, chunk, loop.create_future()) for chunk in chunks]
        self._queue.extend(pending)
        self._queued_items += len(items)
        self._on_depth(self._queued_items)
        self._wakeup.set()
        results = await asyncio.gather(*(p.future for p in pending))
        return [result for chunk in results for result in chunk]

    async def _work(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._collect()
            if batch:
                await self._execute(batch)

    async def _collect(self) -> list[_Pending[Key, Item, Result]]:
        """Take requests for one batch: same key, up to max size, waiting at most max_delay."""
        first = self._queue[0]
        deadline = first.enqueued_at + self.max_delay
        while not self._closed:
            size, blocked = self._fits()
            if size >= self.max_batch_size or blocked:
                break
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        batch: list[_Pending[Key, Item, Result]] = []
        size = 0
        while self._queue:
            head = self._queue[0]
            if head.key is not first.key or size + len(head.items) > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_items -= len(head.items)
            if head.future.done():  # the caller went away (cancelled) while it waited
                continue
            batch.append(head)
            size += len(head.items)
        self._on_depth(self._queued_items)
        return batch

    def _fits(self) -> tuple[int, bool]:
        """Images a batch could take now, and whether a request that cannot join it is next."""
        first_key = self._queue[0].key
        size = 0
        for pending in self._queue:
            if pending.key is not first_key or size + len(pending.items) > self.max_batch_size:
                return size, True
            size += len(pending.items)
        return size, False

    async def _execute(self, batch: list[_Pending[Key, Item, Result]]) -> None:
        started = time.perf_counter()
        for pending in batch:
            self._on_queue_wait(started - pending.enqueued_at)
        items = [item for pending in batch for item in pending.items]
        self._on_batch(len(items))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self._executor, self._run_batch, batch[0].key, items
            )
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        offset = 0
        for pending in batch:
            count = len(pending.items)
            if not pending.future.done():
                pending.future.set_result(list(results[offset : offset + count]))
            offset += count
