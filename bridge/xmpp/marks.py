"""The archive marks of bridged MUCs, written together instead of once per message.

Every message taken from a MUC moves its room's mark (:class:`~bridge.xmpp.store.ArchiveMark`),
which a later catch-up starts from. Writing it with each message doubled the database round
trips of the MUC path; the marks are now kept in memory and written :data:`WRITE_AFTER` seconds
after the first change, one statement per room that moved, and at a stop. A crash loses at most
that second: the next catch-up then asks the archive for a few messages more, and those already
bridged are recognised by their stanza-ids (:mod:`bridge.xmpp.mam`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bridge.xmpp.store import ArchiveMark, XmppStore

WRITE_AFTER = 1.0
"""Seconds a moved mark waits in memory for the marks that move after it."""
CLOSE_WAIT = 5.0


class ArchiveMarks:
    def __init__(self, store: XmppStore, log: logging.Logger, *, delay: float = WRITE_AFTER):
        self._store = store
        self._log = log
        self._delay = delay
        self._moved: dict[str, ArchiveMark] = {}
        self._writing: asyncio.Task[None] | None = None

    async def get(self, room: str) -> ArchiveMark | None:
        """The room's newest mark, written or not."""
        return self._moved.get(room) or await self._store.archive_mark(room)

    def move(self, room: str, mark: ArchiveMark) -> None:
        self._moved[room] = mark
        if self._writing is None:
            self._writing = asyncio.create_task(self._write_later(), name="xmpp-archive-marks")

    async def _write_later(self) -> None:
        try:
            while self._moved:
                await asyncio.sleep(self._delay)
                if not await self.write():
                    await asyncio.sleep(self._delay * 4)  # the database is away: not in a loop
        finally:
            if self._writing is asyncio.current_task():
                self._writing = None

    async def write(self) -> bool:
        """Write the moved marks; False if the database refused (the marks not written are
        kept for the next try, unless a newer mark of the same room came meanwhile)."""
        moved, self._moved = self._moved, {}
        written: set[str] = set()
        try:
            for room, mark in moved.items():
                await self._store.set_archive_mark(room, mark)
                written.add(room)
        except asyncio.CancelledError:
            self._keep(moved, written)
            raise
        except Exception as err:
            self._keep(moved, written)
            self._log.warning("Could not store how far the bridge got in MUC archives: %s", err)
            return False
        return True

    def _keep(self, moved: dict[str, ArchiveMark], written: set[str]) -> None:
        for room, mark in moved.items():
            if room not in written:
                self._moved.setdefault(room, mark)

    async def close(self) -> None:
        """At a stop: write what moved (a restart would otherwise ask the archives again)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writing
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_WAIT):
                await self.write()
