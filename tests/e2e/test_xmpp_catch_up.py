"""Nothing is missed or repeated across gaps (issue #14), against a real Synapse and a real
XMPP server, each test once with Prosody and once with ejabberd (``hub`` below):
a bridged MUC catches up from its archive (XEP-0313) after a kick, and the rooms the bridge
hosts come through a component reconnect and a bridge restart without duplicates, without the
bridge joining them, and with their XMPP occupants still in them."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from tests.e2e.conftest import XMPP_COMPONENT, XMPP_SERVERS, Hub, hub_for
from tests.e2e.hub import eventually
from tests.e2e.test_xmpp import muc_alias, muc_occupant, xmpp_account
from tests.e2e.xmpp_client import XmppUser
from tests.e2e.xmpp_ghosts import muc_ghost

pytestmark = pytest.mark.e2e
_names = itertools.count(1)
LISTENER_NICK = "Matrix bridge"
MUC_HISTORY_CAP = 20
"""Prosody (max_history_messages) and the test ejabberd (mod_muc history_size) replay at most
this many messages of MUC history on a join; catching up on more than that needs the archive."""


@pytest.fixture(params=XMPP_SERVERS)
def hub(request: pytest.FixtureRequest) -> Hub:
    """The hub with Prosody, then the hub with ejabberd."""
    return hub_for(request)


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def _notice(hub: Hub, text: str) -> Any:
    return lambda e: (
        e["type"] == "m.room.message" and e["sender"] == hub.bot
        and e["content"].get("msgtype") == "m.notice" and text in _body(e)
    )  # fmt: skip


async def test_messages_sent_while_the_bridge_was_kicked_arrive_from_the_archive(
    hub: Hub,
) -> None:
    room = f"archive{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, room, "Xena") as xena:  # first in: the room's owner
        alice = await hub.user("alice")
        room_id = await alice.join(muc_alias(room))
        xena.send_groupchat(room, "before the kick")
        await alice.wait_for(lambda e: _body(e) == "before the kick", room_id=room_id)

        await xena.client.plugin["xep_0045"].set_role(JID(room), LISTENER_NICK, "none")
        await xena.wait_for_presence(
            lambda p: p["from"].resource == LISTENER_NICK and p["type"] == "unavailable"
        )
        # More than MUC history replays: only the archive has them all. The bridge rejoins
        # 2 s after the kick; these are in the room well before that.
        meanwhile = [f"meanwhile {i:02d}" for i in range(MUC_HISTORY_CAP + 5)]
        for body in meanwhile:
            xena.send_groupchat(room, body)
        await alice.wait_for(_notice(hub, "bridged again"), room_id=room_id, timeout=60)
        xena.send_groupchat(room, "after the rejoin")
        await alice.wait_for(lambda e: _body(e) == "after the rejoin", room_id=room_id, timeout=30)

        wanted = {*meanwhile, "before the kick", "after the rejoin"}
        await eventually(
            lambda: len(alice.seen(lambda e: _body(e) in wanted, room_id=room_id)) >= len(wanted),
            "every message once",
            timeout=30,
        )
        await asyncio.sleep(2)  # a duplicate would come now
        got = [_body(e) for e in alice.seen(lambda e: _body(e) in wanted, room_id=room_id)]
        assert got == ["before the kick", *meanwhile, "after the rejoin"]
        ghost = muc_ghost(xena, room, "Xena")
        assert all(
            e["sender"] == ghost
            for e in alice.seen(lambda e: _body(e).startswith("meanwhile"), room_id=room_id)
        )


async def test_messages_sent_while_the_bridge_was_stopped_arrive_from_the_archive(
    hub: Hub,
) -> None:
    room = f"restarted{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, room, "Xena") as xena:
        alice = await hub.user("alice")
        room_id = await alice.join(muc_alias(room))
        xena.send_groupchat(room, "before the restart")
        await alice.wait_for(lambda e: _body(e) == "before the restart", room_id=room_id)
        hub.bridge.stop()
        away = [f"while away {i:02d}" for i in range(MUC_HISTORY_CAP + 5)]
        for body in away:
            xena.send_groupchat(room, body)
        await hub.bridge.start(hub.as_port)
        xena.send_groupchat(room, "after the restart")
        wanted = {*away, "before the restart", "after the restart"}
        await eventually(
            lambda: len(alice.seen(lambda e: _body(e) in wanted, room_id=room_id)) >= len(wanted),
            "every message",
            timeout=60,
        )
        await asyncio.sleep(2)  # a duplicate would come now
        got = [_body(e) for e in alice.seen(lambda e: _body(e) in wanted, room_id=room_id)]
        assert got == ["before the restart", *away, "after the restart"]


async def _hosted_room(hub: Hub, prefix: str) -> tuple[Any, str, str]:
    """A public Matrix room with one message; (alice, room id, its MUC JID)."""
    alice = await hub.user("alice")
    localpart = f"{prefix}{next(_names)}"
    room_id = await alice.create_room(preset="public_chat", room_alias_name=localpart)
    await alice.send_text(room_id, "said before anyone came")
    return alice, room_id, f"{localpart}\\3ahub.test@rooms.xmpp.test"


def _bridge_joined(user: XmppUser, muc: str) -> bool:
    """Whether ``user`` saw the bridge's own listener appear in ``muc`` as an occupant."""
    for p in user.presences:
        if p["from"].bare != muc or p["type"] == "unavailable":
            continue
        if p["from"].resource == LISTENER_NICK:
            return True
        for item in p.xml.iter("{http://jabber.org/protocol/muc#user}item"):
            if (item.get("jid") or "").startswith(f"bridge@{XMPP_COMPONENT}"):
                return True
    return False


def _occupants(hub: Hub, muc: str) -> list[str]:
    """The occupants of the hosted room ``muc`` as the bridge has stored them."""
    rows = hub.bridge.query("SELECT jid FROM xmpp_hosted_occupant WHERE room = ?", muc)
    return sorted(str(row[0]) for row in rows)


async def _self_ping(user: XmppUser, occupant: str) -> str:
    """XEP-0410: ``"joined"`` or the error condition the room answers with."""
    iq = user.client.make_iq_get(ito=JID(occupant))
    iq.xml.append(ET.Element("{urn:xmpp:ping}ping"))
    try:
        await iq.send(timeout=10)
    except IqError as err:
        return str(err.iq["error"]["condition"])
    return "joined"


async def test_a_hosted_room_comes_through_a_component_reconnect_without_duplicates(
    hub: Hub,
) -> None:
    alice, room_id, muc = await _hosted_room(hub, "reconnect")
    async with xmpp_account(hub, "xeno") as xeno:
        await xeno.join_muc(muc, "Xeno")
        xeno.send_groupchat(muc, "hello before the outage")
        await alice.wait_for(lambda e: _body(e) == "hello before the outage", room_id=room_id)
        jid = xeno.jid
    await hub.prosody.restart()  # every stream drops, the bridge's components too
    back = XmppUser(jid, "pw", hub.prosody.c2s_port, resource="back")
    await back.connect()
    try:
        await _until_up(back, muc)
        await back.join_muc(muc, "Xeno")
        # Nothing of it came back into itself: the history, the room's own messages.
        await alice.send_text(room_id, "after the outage")
        await back.wait_for_message(lambda m: m["body"] == "after the outage", timeout=20)
        await asyncio.sleep(3)  # a rejoin by the bridge and its history would come now
        for text in ("said before anyone came", "hello before the outage", "after the outage"):
            assert len(alice.seen(lambda e, t=text: _body(e) == t, room_id=room_id)) == 1, text
        assert not _bridge_joined(back, muc)
        assert _occupants(hub, muc) == [f"{jid}/back"]  # and not the bridge's listener
        history = [m for m in back.messages if m["body"] == "said before anyone came"]
        assert len(history) == 1  # once, on the first join of this client
    finally:
        await back.close()


async def _until_up(user: XmppUser, muc: str, timeout: float = 30) -> None:
    """Until the rooms component answers disco#info for ``muc`` again."""
    deadline = time.monotonic() + timeout
    while not await _disco(user, muc):
        assert time.monotonic() < deadline, f"{muc} did not come back within {timeout:.0f} s"
        await asyncio.sleep(0.5)


async def _disco(user: XmppUser, muc: str) -> bool:
    iq = user.client.make_iq_get(ito=JID(muc))
    iq.xml.append(ET.Element("{http://jabber.org/protocol/disco#info}query"))
    try:
        answer = await iq.send(timeout=3)
    except Exception:
        return False
    return answer["type"] == "result"


async def test_a_hosted_room_keeps_its_occupant_across_a_bridge_restart(hub: Hub) -> None:
    alice, room_id, muc = await _hosted_room(hub, "restart")
    async with xmpp_account(hub, "xeno") as xeno:
        await xeno.join_muc(muc, "Xeno")
        xeno.send_groupchat(muc, "hello before the restart")
        await alice.wait_for(lambda e: _body(e) == "hello before the restart", room_id=room_id)
        assert await _self_ping(xeno, f"{muc}/Xeno") == "joined"

        await hub.restart_bridge(kill=False)
        await alice.send_text(room_id, "after the restart")
        # Xeno never rejoined: the bridge remembered her.
        got = await xeno.wait_for_message(lambda m: m["body"] == "after the restart", timeout=30)
        assert got["from"].bare == muc
        assert await _self_ping(xeno, f"{muc}/Xeno") == "joined"
        xeno.send_groupchat(muc, "still here")
        await alice.wait_for(lambda e: _body(e) == "still here", room_id=room_id, timeout=20)

        async with xmpp_account(hub, "mallory") as mallory:  # never joined
            assert await _self_ping(mallory, f"{muc}/Xeno") == "not-acceptable"

        await asyncio.sleep(2)
        for text in ("said before anyone came", "hello before the restart", "after the restart"):
            assert len(alice.seen(lambda e, t=text: _body(e) == t, room_id=room_id)) == 1, text
        assert len([m for m in xeno.messages if m["body"] == "said before anyone came"]) == 1
        assert not _bridge_joined(xeno, muc)
        assert _occupants(hub, muc) == [f"{xeno.jid}/test"]
