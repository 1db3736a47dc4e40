"""Stored rows queued per portal: a stuck portal holds neither its producer, nor memory beyond
its limit, nor any other portal; every row runs once, in order, however many were spilled."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bridge.core.queue import OrderedQueues
from bridge.core.retry import RetryPolicy
from bridge.core.stored_queue import StoredQueue

LOG = logging.getLogger("test.stored_queue")


@dataclass(frozen=True)
class Row:
    id: int
    key: str


class Table:
    """The store: rows stay until they have run, as the inboxes do."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        self.ran: list[Row] = []
        self.stuck: set[str] = set()
        self.unstuck = asyncio.Event()
        self.rereads = 0

    def insert(self, row_id: int, key: str) -> Row:
        row = self.rows[row_id] = Row(row_id, key)
        return row

    async def run(self, row: Row) -> None:
        while row.key in self.stuck:  # the portal waits for its homeserver or network
            await self.unstuck.wait()
        self.ran.append(row)
        del self.rows[row.id]

    async def reread(self, key: str, limit: int) -> list[Row]:
        self.rereads += 1
        return sorted((r for r in self.rows.values() if r.key == key), key=lambda r: r.id)[:limit]


def make(table: Table, limit: int = 3) -> tuple[OrderedQueues, StoredQueue[str, Row]]:
    queues = OrderedQueues(maxsize=2, log=LOG)
    stored: StoredQueue[str, Row] = StoredQueue(
        name="test inbox", queues=queues, run=table.run, reread=table.reread,
        row_id=lambda row: row.id, retry=RetryPolicy(attempts=2, backoff=0, max_backoff=0.01),
        log=LOG, limit=limit, batch=2,
    )  # fmt: skip
    return queues, stored


async def test_a_stuck_portal_holds_neither_its_producer_nor_other_portals() -> None:
    table = Table()
    queues, stored = make(table, limit=3)
    table.stuck.add("a")
    for n in range(1, 41):  # far more than the lane's maxsize and the memory limit
        stored.add("a", "lane-a", table.insert(n, "a"))  # never waits
    stored.add("b", "lane-b", table.insert(41, "b"))
    async with asyncio.timeout(2):
        while not any(r.key == "b" for r in table.ran):
            await asyncio.sleep(0.01)
    assert len(stored) <= 3, "rows beyond the limit stay in the store only"
    assert stored.is_spilled("a")

    table.stuck.clear()
    table.unstuck.set()
    await queues.drain()
    assert [r.id for r in table.ran if r.key == "a"] == list(range(1, 41))
    assert not table.rows and not stored.is_spilled("a") and len(stored) == 0


async def test_a_row_offered_twice_runs_once() -> None:
    table = Table()
    queues, stored = make(table)
    row = table.insert(1, "a")
    assert stored.add("a", "lane", row)
    assert not stored.add("a", "lane", row)  # offered again while queued
    await queues.drain()
    table.rows[1] = row  # its removal failed: the store still has it
    assert not stored.add("a", "lane", row)  # offered again after it ran
    await queues.drain()
    assert table.ran == [row]


async def test_rows_arriving_while_the_store_is_read_back_are_not_left_behind() -> None:
    table = Table()
    queues, stored = make(table, limit=2)
    table.stuck.add("a")
    for n in range(1, 6):
        stored.add("a", "lane", table.insert(n, "a"))
    reread = table.reread
    late = iter(range(6, 9))

    async def racing(key: str, limit: int) -> list[Row]:
        rows = await reread(key, limit)
        n = next(late, None)
        if n is not None:  # stored and offered while this read was on its way
            stored.add("a", "lane", table.insert(n, "a"))
        return rows

    stored._reread = racing  # the queue holds the bound method it was given
    table.stuck.clear()
    table.unstuck.set()
    await queues.drain()
    assert [r.id for r in table.ran] == list(range(1, 9))
    assert not table.rows


async def test_a_spilled_portal_leaves_room_for_the_lanes_other_jobs() -> None:
    """A drain runs ``batch`` rows, then queues itself behind the lane's other jobs."""
    table = Table()
    queues, stored = make(table, limit=100)
    order: list[str] = []
    table.stuck.add("a")
    for n in range(1, 7):
        stored.add("a", "lane", table.insert(n, "a"))

    async def typing() -> None:
        order.append("typing")

    await queues.put("lane", typing)
    run = table.run

    async def recording(row: Row) -> None:
        await run(row)
        order.append(str(row.id))

    stored._run = recording  # the queue holds the bound method it was given
    table.stuck.clear()
    table.unstuck.set()
    await queues.drain()
    assert order.index("typing") < order.index("6")
