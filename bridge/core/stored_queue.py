"""Stored work, queued per portal without ever making its producer wait.

Both inboxes (Matrix → network and network → Matrix) are in the store before anything works on
them, so memory only has to hold what a portal works on next. A :class:`StoredQueue` keeps up to
``limit`` rows per key in memory; a key with more is *spilled*: its further rows stay in the
store only and are read back, oldest first, once the rows in memory are done. Each key has at
most one drain job in its :class:`~bridge.core.queue.OrderedQueues` lane, pushed without
waiting, so a portal stuck behind an outage holds neither unbounded memory nor any other portal,
and a restart after a long outage queues its whole backlog at once.

A drain job runs at most ``batch`` rows, then queues itself again behind the lane's other jobs.

A row runs at most once per process: the ids in memory, running, or among the last
``remember`` finished are known, so a row offered twice (read from the store by a poll while its
producer was still handing it over) runs once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bridge.core.queue import OrderedQueues
from bridge.core.retry import RetryPolicy, until_done

K = TypeVar("K", bound=Hashable)
Row = TypeVar("Row")


@dataclass(slots=True)
class _Backlog(Generic[Row]):
    lane: str
    rows: deque[Row] = field(default_factory=deque)
    spilled: bool = False
    spills: int = 0
    """Rows left in the store only so far; a read back that saw none arrive is complete."""
    scheduled: bool = False


class StoredQueue(Generic[K, Row]):
    def __init__(
        self,
        *,
        name: str,
        queues: OrderedQueues,
        run: Callable[[Row], Awaitable[None]],
        reread: Callable[[K, int], Awaitable[list[Row]]],
        row_id: Callable[[Row], int],
        retry: RetryPolicy,
        log: logging.Logger,
        limit: int,
        batch: int = 32,
        remember: int = 4096,
        after_batch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``run`` handles one row completely (retries, dead letter, removal from the store,
        or leaves the removal to ``after_batch``, awaited when a drain job ends);
        ``reread(key, limit)`` returns the key's rows still in the store, oldest first."""
        self._name = name
        self._queues = queues
        self._run = run
        self._reread = reread
        self._row_id = row_id
        self._retry = retry
        self._log = log
        self._limit = max(1, limit)
        self._batch = max(1, batch)
        self._backlogs: dict[K, _Backlog[Row]] = {}
        self._known: set[int] = set()
        self._finished: deque[int] = deque()
        self._remember = remember
        self._after_batch = after_batch

    def add(self, key: K, lane: str, row: Row) -> bool:
        """Queue ``row`` for ``key``, to run in ``lane``; False if it is already known."""
        row_id = self._row_id(row)
        if row_id in self._known:
            return False
        backlog = self._backlogs.get(key)
        if backlog is None:
            backlog = self._backlogs[key] = _Backlog(lane)
        if backlog.spilled or len(backlog.rows) >= self._limit:
            if not backlog.spilled:
                self._log.info("%s of %s has %d rows waiting; reading the rest from the store "
                               "when it gets to them", self._name, key, self._limit)  # fmt: skip
            backlog.spilled = True
            backlog.spills += 1
        else:
            backlog.rows.append(row)
            self._known.add(row_id)
        self._schedule(key, backlog)
        return True

    def knows(self, row_id: int) -> bool:
        return row_id in self._known

    def is_spilled(self, key: K) -> bool:
        backlog = self._backlogs.get(key)
        return backlog is not None and backlog.spilled

    def __len__(self) -> int:
        """Rows held in memory."""
        return sum(len(b.rows) for b in self._backlogs.values())

    def _schedule(self, key: K, backlog: _Backlog[Row]) -> None:
        if backlog.scheduled or self._queues.closed:
            return
        backlog.scheduled = True
        self._queues.push(backlog.lane, lambda: self._drain(key))

    async def _drain(self, key: K) -> None:
        backlog = self._backlogs.get(key)
        if backlog is None:
            return
        try:
            for _ in range(self._batch):
                if not backlog.rows and not (backlog.spilled and await self._refill(key, backlog)):
                    break
                row = backlog.rows.popleft()
                try:
                    await self._run(row)
                finally:
                    self._done(self._row_id(row))
        finally:
            if self._after_batch is not None:
                await self._after_batch()
            backlog.scheduled = False
            if backlog.rows or backlog.spilled:
                self._schedule(key, backlog)  # behind the lane's other jobs
            elif self._backlogs.get(key) is backlog:
                del self._backlogs[key]

    def _done(self, row_id: int) -> None:
        if len(self._finished) >= self._remember:
            self._known.discard(self._finished.popleft())
        self._finished.append(row_id)

    async def _refill(self, key: K, backlog: _Backlog[Row]) -> bool:
        """Read the key's rows back from the store; True if there is something to run."""
        spills = backlog.spills
        try:
            rows = await until_done(
                f"reading {self._name} of {key} back", lambda: self._reread(key, self._limit),
                self._retry, self._log,
            )  # fmt: skip
        except Exception as err:  # not an outage (those are waited out): try again later
            self._log.error("Could not read %s of %s back: %s", self._name, key, err)
            await asyncio.sleep(self._retry.max_backoff)
            return False
        fresh = [row for row in rows if self._row_id(row) not in self._known]
        backlog.rows.extend(fresh)
        self._known.update(self._row_id(row) for row in fresh)
        if len(rows) < self._limit and spills == backlog.spills:
            backlog.spilled = False
        elif not fresh:
            # Every row read is one this process already ran (its removal failed): wait rather
            # than read the same rows again at once.
            self._log.warning("%s of %s: %d rows already run are still stored",
                              self._name, key, len(rows))  # fmt: skip
            await asyncio.sleep(self._retry.max_backoff)
        return bool(fresh)
