"""Two OlmMachines over the python-olm adapter exchange room keys and messages, and survive a
restart from their pickles in SQLite (no homeserver: :mod:`tests.crypto.fake_homeserver`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mautrix.errors import DuplicateMessageIndex
from mautrix.types import OlmMsgType, TrustState

from tests.crypto.fake_homeserver import (
    ALICE,
    BOB,
    ROOM,
    FakeHomeserver,
    as_room_event,
    deliver_to_device,
    olm_type,
    open_machine,
    send_text,
)


# mautrix itself still fills in the deprecated sender_key of Megolm events.
@pytest.mark.filterwarnings("ignore:The sender_key field in Megolm events:DeprecationWarning")
async def test_two_olm_machines_exchange_room_keys_and_messages(tmp_path: Path) -> None:
    hs = FakeHomeserver()
    alice, alice_db = await open_machine(hs, tmp_path, ALICE, "ALICEDEVICE")
    bob, bob_db = await open_machine(hs, tmp_path, BOB, "BOBDEVICE")
    try:
        await alice.share_keys(0)
        await bob.share_keys(0)

        # Alice's room key reaches Bob in a pre-key message: a new Olm session on his side.
        await alice.share_group_session(ROOM, [ALICE, BOB])
        (room_key,) = await deliver_to_device(hs, bob)
        assert olm_type(room_key) == OlmMsgType.PREKEY
        evt = await bob.decrypt_megolm_event(
            as_room_event(ALICE, await send_text(alice, "hi bob"), 1)
        )
        assert evt.content.body == "hi bob"
        assert evt["mautrix"]["trust_state"] == TrustState.UNVERIFIED

        # Bob's own room key goes back over that session, now as a normal message.
        await bob.share_group_session(ROOM, [ALICE, BOB])
        (room_key,) = await deliver_to_device(hs, alice)
        assert olm_type(room_key) == OlmMsgType.MESSAGE
        evt = await alice.decrypt_megolm_event(
            as_room_event(BOB, await send_text(bob, "hi alice"), 2)
        )
        assert evt.content.body == "hi alice"

        # Bob restarts: account, Olm and Megolm sessions come back from their pickles in SQLite.
        await bob_db.stop()
        bob, bob_db = await open_machine(hs, tmp_path, BOB, "BOBDEVICE")
        again = await send_text(alice, "again")
        evt = await bob.decrypt_megolm_event(as_room_event(ALICE, again, 3))
        assert evt.content.body == "again"
        # The same ciphertext under another event ID is a replay (mautrix's message index check).
        with pytest.raises(DuplicateMessageIndex):
            await bob.decrypt_megolm_event(as_room_event(ALICE, again, 4))
        # A rotated room key travels over the reloaded Olm session.
        await alice.crypto_store.remove_outbound_group_session(ROOM)
        await alice.share_group_session(ROOM, [ALICE, BOB])
        (room_key,) = await deliver_to_device(hs, bob)
        assert olm_type(room_key) == OlmMsgType.MESSAGE
        evt = await bob.decrypt_megolm_event(
            as_room_event(ALICE, await send_text(alice, "rotated"), 5)
        )
        assert evt.content.body == "rotated"
    finally:
        await alice_db.stop()
        await bob_db.stop()
