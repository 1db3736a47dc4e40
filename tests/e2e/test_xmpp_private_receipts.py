"""XEP-0184 receipts and XEP-0333 markers in MUC private messages, against a real Synapse and a
real XMPP server (Prosody, then ejabberd): an occupant who asks for a receipt in a private
message to a Matrix user's occupant gets one once the message is kept, from that occupant, as
in a DM; the Matrix user's read receipt reaches them as a marker; someone outside the room
gets no receipt."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from slixmpp import JID

from tests.e2e.conftest import XMPP_SERVERS, Hub, hub_for
from tests.e2e.test_xmpp import ghost_of, xmpp_account
from tests.e2e.test_xmpp_muc_extras import WAIT, _body, _nick, bridged_room
from tests.e2e.xmpp_ghosts import muc_ghost

pytestmark = pytest.mark.e2e
_names = itertools.count(1)


@pytest.fixture(params=XMPP_SERVERS)
def hub(request: pytest.FixtureRequest) -> Hub:
    """The hub with Prosody, then the hub with ejabberd."""
    return hub_for(request)


async def test_private_messages_in_a_bridged_muc_get_receipts_and_markers(hub: Hub) -> None:
    async with bridged_room(hub, "receipts") as (room, xena, alice, _):
        occupant = JID(f"{room}/{_nick(alice)}")
        # Someone outside the room asks for a receipt: the room refuses, nothing confirms it.
        async with xmpp_account(hub, "outsider") as outsider:
            asked = outsider.send_chat(str(occupant), "confirm this", receipt=True)
            await outsider.wait_for_message(lambda m: m["type"] == "error", timeout=WAIT)
            await asyncio.sleep(2)
            assert not outsider.seen(lambda m: m["receipt"] == asked)

        first = xena.send_chat(str(occupant), "psst, Alice", receipt=True)
        receipt = await xena.wait_for_message(lambda m: m["receipt"] == first, timeout=WAIT)
        assert receipt["from"] == occupant and receipt["type"] == "chat"
        dm = await alice.wait_for_invite(timeout=WAIT)
        await alice.join(dm)
        event = await alice.wait_for(lambda e: _body(e) == "psst, Alice", room_id=dm, timeout=WAIT)
        assert event["sender"] == muc_ghost(xena, room, "Xena")

        await alice.read_receipt(dm, event["event_id"])
        marker = await xena.wait_for_message(lambda m: m["displayed"]["id"] == first, timeout=WAIT)
        assert marker["from"] == occupant
        assert not alice.seen(lambda e: _body(e) == "confirm this")


async def test_private_messages_in_a_hosted_room_get_receipts(hub: Hub) -> None:
    alice = await hub.user("alice")
    localpart = f"receipts{next(_names)}"
    await alice.create_room(preset="public_chat", room_alias_name=localpart)
    muc = f"{localpart}\\3ahub.test@rooms.xmpp.test"
    async with xmpp_account(hub, "xeno") as xeno:
        await xeno.join_muc(muc, "Xeno")
        nick = JID(f"{muc}/{_nick(alice)}")
        asked = xeno.send_chat(str(nick), "just between us", receipt=True)
        receipt = await xeno.wait_for_message(lambda m: m["receipt"] == asked, timeout=WAIT)
        assert receipt["from"] == nick
        dm = await alice.wait_for_invite(timeout=WAIT)
        await alice.join(dm)
        event = await alice.wait_for(lambda e: _body(e) == "just between us", room_id=dm,
                                     timeout=WAIT)  # fmt: skip
        assert event["sender"] == ghost_of(xeno.jid)
        await alice.read_receipt(dm, event["event_id"])
        marker = await xeno.wait_for_message(lambda m: m["displayed"]["id"] == asked, timeout=WAIT)
        assert marker["from"] == nick
