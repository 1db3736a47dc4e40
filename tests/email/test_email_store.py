"""The email connector's private tables, on SQLite and PostgreSQL: contacts and bounce marks,
what a reply needs of each mail, the upgrade from participants, and the raw records."""

from __future__ import annotations

import zlib

import pytest

from bridge.email.records import DAY_MS, DIRECTION_IN, DIRECTION_OUT, Records, record_hash
from bridge.email.store import MAX_CONTACTS, MAX_REFERENCES, EmailStore, StoredMail
from bridge.portal import Store

ROOM = "board.abcdefghijklmnop@mail.test"
OTHER = "other.abcdefghijklmnop@mail.test"


async def _email_store(store: Store) -> EmailStore:
    email = EmailStore(store.database)
    await email.upgrade()
    await email.upgrade()  # a restart finds the tables in place
    return email


async def test_contacts_are_a_set_per_portal_and_can_be_removed(store: Store) -> None:
    email = await _email_store(store)
    for address in ("bob@example.org", "alice@example.org", "bob@example.org"):
        assert await email.add_contact(ROOM, address)
    await email.add_contact(OTHER, "carol@example.org")
    assert [c.address for c in await email.contacts(ROOM)] == [
        "alice@example.org", "bob@example.org"
    ]  # fmt: skip
    assert await email.remove_contact(ROOM, "bob@example.org")
    assert not await email.remove_contact(ROOM, "bob@example.org")
    assert not await email.remove_contact(ROOM, "carol@example.org")  # another portal's
    assert [c.address for c in await email.contacts(ROOM)] == ["alice@example.org"]
    assert [c.address for c in await email.contacts(OTHER)] == ["carol@example.org"]


async def test_a_bounce_mark_stops_a_contact_until_it_is_added_again(store: Store) -> None:
    email = await _email_store(store)
    await email.add_contact(ROOM, "bob@example.org")
    await email.mark_bounced(ROOM, "bob@example.org", "550 5.1.1 no such user " + "x" * 1000)
    await email.mark_bounced(ROOM, "dan@example.org", "550 5.1.1")  # a reply-all recipient
    [bob] = await email.contacts(ROOM)
    assert (
        bob.bounced is not None and bob.bounced.startswith("550 5.1.1") and len(bob.bounced) <= 500
    )
    assert await email.bounced(ROOM) == {"bob@example.org", "dan@example.org"}
    assert await email.bounced(OTHER) == set()  # a mark is the portal's only
    await email.add_contact(ROOM, "bob@example.org")
    assert [c.bounced for c in await email.contacts(ROOM)] == [None]
    assert await email.bounced(ROOM) == {"dan@example.org"}


async def test_a_portal_has_a_bounded_number_of_contacts(store: Store) -> None:
    email = await _email_store(store)
    for n in range(MAX_CONTACTS):
        assert await email.add_contact(ROOM, f"p{n}@example.org")
    assert not await email.add_contact(ROOM, "one-too-many@example.org")
    assert await email.add_contact(ROOM, "p0@example.org")  # one already there: fine
    assert len(await email.contacts(ROOM)) == MAX_CONTACTS


async def test_a_mail_keeps_what_a_reply_needs_and_the_first_write_wins(store: Store) -> None:
    email = await _email_store(store)
    references = [f"<{n}@example.org>" for n in range(30)]
    await email.remember_mail(ROOM, "<root@example.org>", "Budget", references,
                              reply_to=["bob@example.org"], reply_cc=["dan@example.org"])  # fmt: skip
    await email.remember_mail(ROOM, "<root@example.org>", "Changed", [], reply_to=["x@y.org"])
    assert await email.mail(ROOM, "<root@example.org>") == StoredMail(
        subject="Budget", references=references[-MAX_REFERENCES:],
        reply_to=["bob@example.org"], reply_cc=["dan@example.org"],
    )  # fmt: skip
    await email.remember_mail(ROOM, "<sent@mail.test>", "Hi", [], separately=True,
                              sent_to=["a@example.org", "b@example.org"])  # fmt: skip
    sent = await email.mail(ROOM, "<sent@mail.test>")
    assert (
        sent is not None and sent.separately and sent.sent_to == ["a@example.org", "b@example.org"]
    )
    assert await email.mail(OTHER, "<root@example.org>") is None


async def test_the_upgrade_makes_every_participant_a_contact(store: Store) -> None:
    """A bridge upgraded from participants keeps mailing everyone it mailed before."""
    from bridge.email.store import _create_tables  # the version 1 schema
    from bridge.portal import connector_upgrade_table, upgrade_connector_tables

    old = connector_upgrade_table("email")
    old.register(_create_tables, description="v1")
    await upgrade_connector_tables(store.database, old)
    for portal, address in ((ROOM, "bob@example.org"), (ROOM, "alice@example.org"),
                            (OTHER, "carol@example.org")):  # fmt: skip
        await store.database.execute(
            "INSERT INTO email_participant (portal, address) VALUES ($1, $2)", portal, address
        )
    await store.database.execute(
        "INSERT INTO email_mail (portal, message_id, subject, refs) VALUES ($1, $2, $3, $4)",
        ROOM, "<old@example.org>", "Old", "<a@example.org>",
    )  # fmt: skip
    email = await _email_store(store)
    assert [c.address for c in await email.contacts(ROOM)] == [
        "alice@example.org", "bob@example.org"
    ]  # fmt: skip
    assert [c.address for c in await email.contacts(OTHER)] == ["carol@example.org"]
    old_mail = await email.mail(ROOM, "<old@example.org>")
    assert old_mail == StoredMail(subject="Old", references=["<a@example.org>"])


async def test_a_dm_portal_is_found_again_and_can_move(store: Store) -> None:
    email = await _email_store(store)
    assert await email.dm_portal("@alice:hub.test", "bob@example.org") is None
    await email.set_dm_portal("@alice:hub.test", "bob@example.org", ROOM)
    assert await email.dm_portal("@alice:hub.test", "bob@example.org") == ROOM
    await email.set_dm_portal("@alice:hub.test", "bob@example.org", OTHER)
    assert await email.dm_portal("@alice:hub.test", "bob@example.org") == OTHER
    assert await email.dm_portal("@carol:hub.test", "bob@example.org") is None


# --- records ------------------------------------------------------------------------------------

RAW = b"From: bob@example.org\r\nMessage-ID: <1@example.org>\r\n\r\n" + bytes(range(256)) * 64


async def test_a_record_is_kept_once_by_its_hash_and_found_by_hash_or_message_id(
    store: Store,
) -> None:
    records = Records(await _email_store(store))
    digest = await records.keep(ROOM, "<1@example.org>", DIRECTION_IN, RAW)
    assert digest == record_hash(RAW)
    assert await records.keep(ROOM, "<1@example.org>", DIRECTION_IN, RAW) == digest  # a retry
    await records.keep(OTHER, "<1@example.org>", DIRECTION_IN, RAW)  # to two portals
    assert await records.raw(digest) == RAW
    assert await records.raw(digest.upper()) == RAW
    assert {(r.portal, r.direction) for r in await records.find("<1@example.org>")} == {
        (ROOM, DIRECTION_IN), (OTHER, DIRECTION_IN)
    }  # fmt: skip
    assert [r.message_id for r in await records.find(digest)] == ["<1@example.org>"] * 2
    rows = await store.database.fetch("SELECT size, data FROM email_record")
    assert len(rows) == 1 and rows[0]["size"] == len(RAW)
    assert len(bytes(rows[0]["data"])) < len(RAW)  # compressed
    assert await records.raw("0" * 64) is None and await records.find("<none@x>") == []


async def test_an_altered_record_is_reported_not_returned(store: Store) -> None:
    records = Records(await _email_store(store))
    digest = await records.keep(ROOM, "<1@example.org>", DIRECTION_IN, RAW)
    await store.database.execute(
        "UPDATE email_record SET data=$1 WHERE sha256=$2", zlib.compress(b"forged"), digest
    )
    with pytest.raises(ValueError, match="altered"):
        await records.raw(digest)


async def test_housekeeping_deletes_only_records_past_their_retention(store: Store) -> None:
    records = Records(await _email_store(store))
    old = await records.keep(ROOM, "<old@example.org>", DIRECTION_IN, b"old mail")
    shared = await records.keep(ROOM, "<s@example.org>", DIRECTION_OUT, b"kept by a newer ref")
    await store.database.execute("UPDATE email_record_ref SET stored_at=0")
    await records.keep(OTHER, "<s2@example.org>", DIRECTION_OUT, b"kept by a newer ref")
    fresh = await records.keep(ROOM, "<new@example.org>", DIRECTION_IN, b"new mail")
    assert await records.prune(0) == 0  # 0 keeps everything
    assert await records.prune(30, now_ms=31 * DAY_MS) == 1
    assert await records.raw(old) is None and await records.find("<old@example.org>") == []
    assert await records.raw(shared) == b"kept by a newer ref"
    assert await records.raw(fresh) == b"new mail"
