"""Per-portal ordered work queues.

Every portal gets a FIFO lane drained by one worker task, so events of one chat are handled
strictly in order while different chats proceed concurrently. A worker exits when its lane runs
dry, so ten thousand quiet portals cost ten thousand dictionary entries at most, not tasks.

:meth:`OrderedQueues.put` waits while a lane holds ``maxsize`` jobs, slowing its caller down
instead of letting memory grow. :meth:`OrderedQueues.push` never waits: it is for callers that
bound themselves (a stored queue keeps at most one job per lane here, see
:mod:`bridge.core.stored_queue`), so that one stuck portal can never block a producer that feeds
every portal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

Job = Callable[[], Awaitable[None]]


class _Lane:
    __slots__ = ("jobs", "room")

    def __init__(self) -> None:
        self.jobs: deque[tuple[float, Job]] = deque()
        self.room = asyncio.Event()
        """Set each time a job leaves the lane."""


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
        self._lanes: dict[str, _Lane] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return sum(len(lane.jobs) for lane in self._lanes.values())

    async def put(self, key: str, job: Job) -> None:
        """Queue ``job`` behind everything already queued for ``key``; waits while that lane
        is full."""
        warned = False
        while True:
            self._check_open()
            lane = self._lanes.get(key)
            if lane is None or len(lane.jobs) < self._maxsize:
                break
            if not warned:
                self._log.warning("Queue for %s is full (%d jobs); waiting", key, self._maxsize)
                warned = True
            lane.room.clear()
            await lane.room.wait()
        self.push(key, job)

    def offer(self, key: str, job: Job) -> bool:
        """Queue ``job`` if its lane has room; False (and nothing queued) if it is full."""
        lane = self._lanes.get(key)
        if lane is not None and len(lane.jobs) >= self._maxsize:
            return False
        self.push(key, job)
        return True

    def push(self, key: str, job: Job) -> None:
        """Queue ``job`` behind everything already queued for ``key`` without waiting."""
        self._check_open()
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.jobs.append((time.monotonic(), job))
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key, lane), name=f"queue:{key}")

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("queues are closed")

    async def _work(self, key: str, lane: _Lane) -> None:
        try:
            # Checking emptiness and unregistering happen without an await in between, so a
            # concurrent push() either sees this worker or starts a new one.
            while lane.jobs:
                queued_at, job = lane.jobs.popleft()
                lane.room.set()
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
            if self._workers.get(key) is asyncio.current_task():
                del self._workers[key]
                if not lane.jobs and self._lanes.get(key) is lane:
                    del self._lanes[key]

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
        for lane in self._lanes.values():
            lane.room.set()  # waiting producers see the queues are closed
        self._lanes.clear()
