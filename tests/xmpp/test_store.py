"""The XMPP connector's tables on SQLite and PostgreSQL: archive marks and hosted occupants
survive a reopen, and the migration runs once."""

from __future__ import annotations

from bridge.portal import Store
from bridge.xmpp.store import ArchiveMark, XmppStore
from tests.store_fixtures import StoreTarget

ROOM = "team@muc.example.org"
HOSTED = "lobby\\3ahub.example@rooms.example.org"


async def test_marks_and_occupants_survive_a_reopen(store_target: StoreTarget) -> None:
    store = await store_target.open()
    try:
        xmpp = XmppStore(store.database)
        await xmpp.upgrade()
        await xmpp.upgrade()  # a second start changes nothing
        assert await xmpp.archive_mark(ROOM) is None
        await xmpp.set_archive_mark(ROOM, ArchiveMark("", 1000))
        await xmpp.set_archive_mark(ROOM, ArchiveMark("s-42", 2000))
        await xmpp.set_occupant(HOSTED, "Xena", "xena@xmpp.example/phone")
        await xmpp.set_occupant(HOSTED, "Yan", "yan@xmpp.example/pc")
        await xmpp.set_occupant(HOSTED, "Yan", "yan@xmpp.example/laptop")  # the nick moved
        await xmpp.set_occupant(HOSTED, "Gone", "gone@xmpp.example/x")
        await xmpp.remove_occupant(HOSTED, "Gone")
        await xmpp.remove_occupant(HOSTED, "never there")
    finally:
        await store.close()
    reopened: Store = await store_target.open()
    try:
        xmpp = XmppStore(reopened.database)
        await xmpp.upgrade()
        assert await xmpp.archive_mark(ROOM) == ArchiveMark("s-42", 2000)
        assert await xmpp.hosted_occupants() == {
            HOSTED: {"Xena": "xena@xmpp.example/phone", "Yan": "yan@xmpp.example/laptop"}
        }
    finally:
        await reopened.close()
