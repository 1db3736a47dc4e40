"""Archive marks (bridge.xmpp.marks): written together, never lost to a database outage."""

from __future__ import annotations

import asyncio
import logging

from bridge.xmpp.marks import ArchiveMarks
from bridge.xmpp.store import ArchiveMark

LOG = logging.getLogger("test.xmpp.marks")


class Store:
    def __init__(self) -> None:
        self.marks: dict[str, ArchiveMark] = {}
        self.writes = 0
        self.away = False

    async def archive_mark(self, room: str) -> ArchiveMark | None:
        return self.marks.get(room)

    async def set_archive_mark(self, room: str, mark: ArchiveMark) -> None:
        if self.away:
            raise OSError("database unreachable")
        self.writes += 1
        self.marks[room] = mark


def _marks(store: Store, delay: float = 0.05) -> ArchiveMarks:
    return ArchiveMarks(store, LOG, delay=delay)  # type: ignore[arg-type]


async def test_a_burst_of_messages_costs_one_write_per_room() -> None:
    store = Store()
    marks = _marks(store)
    for n in range(200):
        marks.move("a@muc.test", ArchiveMark(f"s{n}", n))
        marks.move("b@muc.test", ArchiveMark(f"t{n}", n))
    assert (await marks.get("a@muc.test")) == ArchiveMark("s199", 199)  # before it is written
    await asyncio.sleep(0.2)
    assert store.writes == 2
    assert store.marks == {"a@muc.test": ArchiveMark("s199", 199),
                           "b@muc.test": ArchiveMark("t199", 199)}  # fmt: skip


async def test_an_outage_keeps_the_marks_for_later_and_a_newer_one_wins() -> None:
    store = Store()
    marks = _marks(store)
    store.away = True
    marks.move("a@muc.test", ArchiveMark("s1", 1))
    await asyncio.sleep(0.1)
    assert store.marks == {}
    marks.move("a@muc.test", ArchiveMark("s2", 2))  # a newer one while the database is away
    store.away = False
    await asyncio.sleep(0.5)
    assert store.marks == {"a@muc.test": ArchiveMark("s2", 2)}


async def test_a_stop_writes_what_moved() -> None:
    store = Store()
    marks = _marks(store, delay=60)
    marks.move("a@muc.test", ArchiveMark("s9", 9))
    await marks.close()
    assert store.marks == {"a@muc.test": ArchiveMark("s9", 9)} and store.writes == 1
