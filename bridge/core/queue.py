"""Per-portal ordered work queues.

Every portal gets a bounded FIFO drained by one worker task, so events of one chat are handled
strictly in order while different chats proceed concurrently. A worker exits when its queue runs
dry, so ten thousand quiet portals cost ten thousand dictionary entries at most, not tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

Job = Callable[[], Awaitable[None]]


class OrderedQueues:
    def __init__(
        self,
        *,
        maxsize: int,
        log: logging.Logger,
        observe_wait: Callable[[float], None] | None = None,
    ) -> None:
        self._maxsize = maxsize
        self._log = log
        self._observe_wait = observe_wait
        self._queues: dict[str, asyncio.Queue[tuple[float, Job]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def __len__(self) -> int:
        return sum(q.qsize() for q in self._queues.values())

    async def put(self, key: str, job: Job) -> None:
        """Queue ``job`` behind everything already queued for ``key``.

        Waits while that portal's queue is full: the caller is slowed down instead of memory
        growing without bound.
        """
        if self._closed:
            raise RuntimeError("queues are closed")
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue(self._maxsize)
        if queue.full():
            self._log.warning("Queue for %s is full (%d jobs); waiting", key, self._maxsize)
        await queue.put((time.monotonic(), job))
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key, queue), name=f"queue:{key}")

    async def _work(self, key: str, queue: asyncio.Queue[tuple[float, Job]]) -> None:
        try:
            while True:
                # Checking emptiness and unregistering happen without an await in between, so a
                # concurrent put() either sees this worker or starts a new one.
                if queue.empty():
                    return
                queued_at, job = queue.get_nowait()
                if self._observe_wait is not None:
                    self._observe_wait(time.monotonic() - queued_at)
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Jobs handle their own retries; reaching here is a bug, not a remote failure.
                    self._log.exception(
                        "Unhandled error in job for %s; continuing with the next", key
                    )
                finally:
                    queue.task_done()
        finally:
            if self._workers.get(key) is asyncio.current_task():
                del self._workers[key]
                if queue.empty():
                    self._queues.pop(key, None)

    async def drain(self) -> None:
        """Wait until every queued job has finished."""
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._workers.clear()
        self._queues.clear()
