"""Dead letters as an operator handles them, both directions, on SQLite and PostgreSQL:
listed with their direction, network and room; shown with the payload (secrets hidden);
retried back into their inbox behind what is queued; dropped."""

from __future__ import annotations

import asyncio
import json

from bridge.core.ids import LoginID, NetworkID, PortalKey, RemoteChatID
from bridge.portal.dead_letters import (
    HIDDEN,
    UNREADABLE,
    UnreadableEvent,
    details,
    hide_secrets,
    line,
)
from bridge.portal.models import InboxItem, Portal, RemoteInput
from bridge.portal.store import Store
from tests.store_fixtures import StoreTarget

NET = NetworkID("reference")
KEY = PortalKey(NET, RemoteChatID("chat-1"), LoginID(""))
ROOM = "!portal:hub.test"


def pdu(event_id: str, body: str = "hi", room: str = ROOM) -> InboxItem:
    payload = {"event_id": event_id, "room_id": room, "type": "m.room.message",
               "sender": "@alice:hub.test", "content": {"msgtype": "m.text", "body": body}}  # fmt: skip
    return InboxItem("pdu", event_id, room, payload)


async def matrix_letter(store: Store, event_id: str, error: str = "refused by policy") -> int:
    rows = await store.store_transaction(f"txn-{event_id}", [pdu(event_id)])
    assert rows
    await store.record_inbox_failure(rows[0].id, error)
    return (await store.park_inbox(rows[0].id, error)).id


async def remote_letter(store: Store, text: str, dedupe: str | None = None) -> int:
    item = RemoteInput(portal=KEY, kind="message", payload={"text": text, "password": "hunter2"},
                       dedupe_id=dedupe or text, login=LoginID("shared"))  # fmt: skip
    row = await store.remote_inbox.add(item)
    assert row is not None
    return await store.remote_inbox.park(row, "M_FORBIDDEN: the room refused it")


async def test_both_directions_are_listed_with_network_room_and_error(store: Store) -> None:
    await store.save_portal(Portal(network=NET, remote_id=KEY.remote_id, mxid=ROOM))
    to_network = await matrix_letter(store, "$refused")
    to_matrix = await remote_letter(store, "hello")
    letters = await store.dead_letters.newest()
    assert [x.id for x in letters] == [to_network, to_matrix]
    out, back = letters
    assert (out.direction, out.network, out.room_id, out.portal_id) == (
        "Matrix → network", "reference", ROOM, "chat-1",
    )  # fmt: skip
    assert (back.direction, back.network, back.room_id, back.portal_id) == (
        "network → Matrix", "reference", ROOM, "chat-1",
    )  # fmt: skip
    assert (out.attempts, back.attempts) == (1, 0)
    text = line(out)
    assert text.startswith(f"{to_network}  Matrix → network  reference  {ROOM}  ")
    assert text.endswith("  1 attempt  refused by policy") and "\n" not in text
    assert line(back).startswith(
        f"{to_matrix}  network → Matrix  reference  portal chat-1 ({ROOM})"
    )
    assert [x.id for x in await store.dead_letters.newest(limit=1)] == [to_matrix]
    assert await store.dead_letters.count() == 2


async def test_show_has_the_payload_with_secrets_hidden(store: Store) -> None:
    letter_id = await remote_letter(store, "hello")
    letter = await store.dead_letters.get(letter_id)
    assert letter is not None and letter.payload is not None
    assert json.loads(letter.payload)["password"] == "hunter2"  # kept as it was for a retry
    shown = details(letter)
    assert "hunter2" not in shown and f'"password": "{HIDDEN}"' in shown
    assert '"text": "hello"' in shown and "network → Matrix" in shown
    assert await store.dead_letters.get(letter_id + 100) is None
    nested = {"a": [{"access_token": "x", "Authorization": "y"}], "client_secret": {"k": 1}}
    assert hide_secrets(nested) == {
        "a": [{"access_token": HIDDEN, "Authorization": HIDDEN}], "client_secret": HIDDEN,
    }  # fmt: skip


async def test_a_matrix_retry_goes_back_into_the_inbox_behind_what_is_queued(store: Store) -> None:
    letter_id = await matrix_letter(store, "$refused")
    queued = await store.store_transaction("later", [pdu("$later")])
    assert queued
    result = await store.dead_letters.retry(letter_id)
    assert (result.outcome, result.to_network) == ("retried", True)
    assert result.row_id is not None and result.row_id > queued[0].id
    pending = await store.pending_inbox()
    assert [(r.event_id, r.txn_id, r.attempts) for r in pending] == [
        ("$later", "later", 0), ("$refused", f"retry:{letter_id}", 0),
    ]  # fmt: skip
    assert pending[1].payload["content"]["body"] == "hi"
    assert await store.dead_letters.count() == 0
    assert (await store.dead_letters.retry(letter_id)).outcome == "missing"


async def test_a_remote_retry_goes_back_into_the_remote_inbox(store: Store) -> None:
    letter_id = await remote_letter(store, "hello")
    item = RemoteInput(portal=KEY, kind="message", payload={"text": "newer"}, dedupe_id="newer")
    newer = await store.remote_inbox.add(item)
    assert newer is not None
    result = await store.dead_letters.retry(letter_id)
    assert (result.outcome, result.to_network) == ("retried", False)
    rows = await store.remote_inbox.pending()
    assert [r.id for r in rows] == [newer.id, result.row_id]
    back = rows[1].input
    assert (back.portal, back.kind, back.dedupe_id, back.login) == (
        KEY, "message", "hello", "shared",
    )  # fmt: skip
    assert back.payload == {"text": "hello", "password": "hunter2"} and rows[1].attempts == 0
    assert await store.dead_letters.count() == 0


async def test_a_retry_of_what_is_already_pending_just_removes_the_letter(store: Store) -> None:
    remote_id = await remote_letter(store, "again")
    again = RemoteInput(portal=KEY, kind="message", payload={"text": "again"}, dedupe_id="again")
    assert await store.remote_inbox.add(again) is not None  # the network offered it again
    matrix_id = await matrix_letter(store, "$twice")
    assert await store.store_transaction("resent", [pdu("$twice")])
    assert (await store.dead_letters.retry(remote_id)).outcome == "pending"
    assert (await store.dead_letters.retry(matrix_id)).outcome == "pending"
    assert len(await store.remote_inbox.pending()) == 1 and len(await store.pending_inbox()) == 1
    assert await store.dead_letters.count() == 0


async def test_an_unreadable_event_cannot_be_retried_only_dropped(store: Store) -> None:
    first = await matrix_letter(store, "$first")
    (unreadable,) = await store.dead_letters.park_unreadable(
        "t9", [UnreadableEvent("pdu", {"type": "m.room.message"}, "events[0].event_id must be "
                               "a string", room_id="!r:hub")]
    )  # fmt: skip
    last = await remote_letter(store, "last")
    letter = await store.dead_letters.get(unreadable)
    assert letter is not None and letter.error.startswith(UNREADABLE) and not letter.retryable
    assert "(transaction t9)" in letter.error and "drop it" in details(letter)

    assert (await store.dead_letters.retry(unreadable)).outcome == "unreadable"
    assert await store.dead_letters.get(unreadable) is not None  # kept
    results = await store.dead_letters.retry_all()
    assert [(r.letter_id, r.outcome) for r in results] == [
        (first, "retried"), (unreadable, "unreadable"), (last, "retried"),
    ]  # fmt: skip
    assert [x.id for x in await store.dead_letters.newest()] == [unreadable]
    assert await store.dead_letters.drop(unreadable)
    assert not await store.dead_letters.drop(unreadable)
    assert await store.dead_letters.count() == 0


async def test_drop_all_empties_both_directions(store: Store) -> None:
    await matrix_letter(store, "$a")
    await remote_letter(store, "b")
    assert await store.dead_letters.drop_all() == 2
    assert await store.dead_letters.drop_all() == 0
    assert await store.pending_inbox() == [] and await store.remote_inbox.pending() == []


async def test_a_retry_waits_for_an_insert_under_way_and_lands_above_it(
    store: Store, store_target: StoreTarget
) -> None:
    """What lets the running bridge find a retried row: its id is above every row committed
    before it, even one whose insert was under way when the retry began."""
    letter_id = await matrix_letter(store, "$refused")
    bridge = await store_target.open()
    try:
        inserted = asyncio.Event()
        release = asyncio.Event()

        async def appservice_insert() -> int:
            async with bridge.dead_letters.transaction():
                rows = await bridge.store_transaction("under-way", [pdu("$under-way")])
                inserted.set()
                await release.wait()
            assert rows
            return rows[0].id

        insert = asyncio.create_task(appservice_insert())
        await inserted.wait()
        retry = asyncio.create_task(store.dead_letters.retry(letter_id))
        await asyncio.sleep(0.3)
        waited = not retry.done()
        release.set()
        under_way_id = await insert
        result = await retry
        assert waited, "the retry must wait for the insert under way"
        assert result.row_id is not None and result.row_id > under_way_id
    finally:
        release.set()
        await bridge.close()
