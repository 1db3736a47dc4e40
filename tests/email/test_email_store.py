"""The email connector's private tables, on SQLite and PostgreSQL."""

from __future__ import annotations

from bridge.email.store import MAX_REFERENCES, EmailStore
from bridge.portal import Store

ROOM = "board.abcdefghijklmnop@mail.test"


async def _email_store(store: Store) -> EmailStore:
    email = EmailStore(store.database)
    await email.upgrade()
    await email.upgrade()  # a restart finds the tables in place
    return email


async def test_participants_are_a_set_per_portal(store: Store) -> None:
    email = await _email_store(store)
    for address in ("bob@example.org", "alice@example.org", "bob@example.org"):
        await email.add_participant(ROOM, address)
    await email.add_participant("other.abcdefghijklmnop@mail.test", "carol@example.org")
    assert await email.participants(ROOM) == ["alice@example.org", "bob@example.org"]


async def test_a_mail_keeps_its_subject_and_the_last_references(store: Store) -> None:
    email = await _email_store(store)
    references = [f"<{n}@example.org>" for n in range(30)]
    await email.remember_mail(ROOM, "<root@example.org>", "Budget", references)
    await email.remember_mail(ROOM, "<root@example.org>", "Changed", [])  # first one wins
    assert await email.mail(ROOM, "<root@example.org>") == ("Budget", references[-MAX_REFERENCES:])
    assert await email.mail("other.abcdefghijklmnop@mail.test", "<root@example.org>") is None


async def test_a_dm_portal_is_found_again_and_can_move(store: Store) -> None:
    email = await _email_store(store)
    assert await email.dm_portal("@alice:hub.test", "bob@example.org") is None
    await email.set_dm_portal("@alice:hub.test", "bob@example.org", ROOM)
    assert await email.dm_portal("@alice:hub.test", "bob@example.org") == ROOM
    await email.set_dm_portal(
        "@alice:hub.test", "bob@example.org", "new.abcdefghijklmnop@mail.test"
    )
    assert (
        await email.dm_portal("@alice:hub.test", "bob@example.org")
        == "new.abcdefghijklmnop@mail.test"
    )
    assert await email.dm_portal("@carol:hub.test", "bob@example.org") is None
