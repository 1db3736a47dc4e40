"""Private messages, invitations, chat states and markers in MUCs, and the admin lists of the
rooms the bridge hosts (issue #14, item 5), against a real XMPP server and a real Synapse: what
an XMPP client and a Matrix client each see."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, Iq

from bridge.xmpp.invites import PER_INVITER
from tests.e2e.conftest import XMPP_SERVERS, XMPP_STRANGER_DOMAIN, Hub, hub_for
from tests.e2e.hub import eventually
from tests.e2e.matrix_client import MatrixUser
from tests.e2e.test_xmpp import ghost_of, jid_of, muc_alias, muc_occupant, xmpp_account
from tests.e2e.xmpp_client import XmppUser
from tests.e2e.xmpp_ghosts import muc_ghost

pytestmark = pytest.mark.e2e
_names = itertools.count(1)
WAIT = 45.0
ADMIN = "http://jabber.org/protocol/muc#admin"


@pytest.fixture(params=XMPP_SERVERS)
def hub(request: pytest.FixtureRequest) -> Hub:
    return hub_for(request)


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


def _nick(user: MatrixUser) -> str:
    return user.mxid[1:].split(":")[0].capitalize()


def invite_directly(user: XmppUser, to: str, room: str) -> None:
    """XEP-0249: a direct invitation to ``room``."""
    msg = user.client.make_message(mto=JID(to), mtype="normal")
    msg.xml.append(ET.Element("{jabber:x:conference}x", {"jid": room}))
    msg.send()


def invite_via_room(user: XmppUser, to: str, room: str) -> None:
    """XEP-0045 §7.8.2: ask ``room`` to invite ``to`` (a mediated invitation, which the room
    sends from its own address and so vouches for)."""
    msg = user.client.make_message(mto=JID(room), mtype="normal")
    x = ET.SubElement(msg.xml, "{http://jabber.org/protocol/muc#user}x")
    ET.SubElement(x, "{http://jabber.org/protocol/muc#user}invite", {"to": to})
    msg.send()


@contextlib.asynccontextmanager
async def bridged_room(
    hub: Hub, prefix: str
) -> AsyncIterator[tuple[str, XmppUser, MatrixUser, str]]:
    """A MUC with Xena in it, bridged; Alice is in its portal and has spoken (so her occupant
    is in the MUC). Yields (room, xena, alice, portal room id)."""
    room = f"{prefix}{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, room, "Xena") as xena:
        alice = await hub.user("alice")
        room_id = await alice.join(muc_alias(room))
        await alice.send_text(room_id, "Alice is here")
        await xena.wait_for_message(
            lambda m: m["body"] == "Alice is here" and m["from"].resource == _nick(alice),
            timeout=WAIT,
        )
        yield room, xena, alice, room_id


async def test_private_messages_both_ways_in_a_bridged_muc(hub: Hub) -> None:
    async with bridged_room(hub, "whisper") as (room, xena, alice, _):
        nick = _nick(alice)
        xena.send_chat(f"{room}/{nick}", "psst, Alice")
        dm = await alice.wait_for_invite(timeout=WAIT)
        await alice.join(dm)
        event = await alice.wait_for(lambda e: _body(e) == "psst, Alice", room_id=dm, timeout=WAIT)
        assert event["sender"] == muc_ghost(xena, room, "Xena")  # the same ghost as in the room

        await alice.send_text(dm, "psst back")
        got = await xena.wait_for_message(lambda m: m["body"] == "psst back", timeout=WAIT)
        assert got["type"] == "chat" and got["from"] == JID(f"{room}/{nick}")

        # Someone outside the room cannot write to Alice's occupant through it.
        async with xmpp_account(hub, "outsider") as outsider:
            outsider.send_chat(f"{room}/{nick}", "let me in")
            await outsider.wait_for_message(lambda m: m["type"] == "error", timeout=WAIT)
        xena.send_chat(f"{room}/{nick}", "after the outsider")
        await alice.wait_for(lambda e: _body(e) == "after the outsider", room_id=dm, timeout=WAIT)
        assert not alice.seen(lambda e: _body(e) == "let me in")


async def test_chat_states_and_markers_in_a_bridged_muc(hub: Hub) -> None:
    async with bridged_room(hub, "typing") as (room, xena, alice, room_id):
        ghost = muc_ghost(xena, room, "Xena")
        xena.chat_state(room, "composing", groupchat=True)
        await alice.wait_for_ephemeral(lambda e: e["type"] == "m.typing"
                                       and ghost in e["content"]["user_ids"], room_id=room_id,
                                       timeout=WAIT)  # fmt: skip
        await alice.typing(room_id, True)
        await xena.wait_for_message(lambda m: m["from"] == JID(f"{room}/{_nick(alice)}")
                                    and m["chat_state"] == "composing", timeout=WAIT)  # fmt: skip

        mine = await alice.send_text(room_id, "please read this")
        reflected = await xena.wait_for_message(lambda m: m["body"] == "please read this",
                                                timeout=WAIT)  # fmt: skip
        xena.displayed_marker(room, reflected["stanza_id"]["id"], groupchat=True)
        await alice.wait_for_ephemeral(lambda e: e["type"] == "m.receipt"
                                       and ghost in e["content"].get(mine, {}).get("m.read", {}),
                                       room_id=room_id, timeout=WAIT)  # fmt: skip

        xena.send_groupchat(room, "read mine too")
        own = await xena.wait_for_message(lambda m: m["body"] == "read mine too"
                                          and m["type"] == "groupchat", timeout=WAIT)  # fmt: skip
        theirs = await alice.wait_for(lambda e: _body(e) == "read mine too", room_id=room_id,
                                      timeout=WAIT)  # fmt: skip
        await alice.read_receipt(room_id, theirs["event_id"])
        await xena.wait_for_message(lambda m: m["displayed"]["id"] == own["stanza_id"]["id"]
                                    and m["from"].resource == _nick(alice), timeout=WAIT)  # fmt: skip


async def test_invitations_from_xmpp_bring_matrix_users_in_and_strangers_do_not(hub: Hub) -> None:
    alice, bob, carol = [await hub.user(n) for n in ("alice", "bob", "carol")]
    room = f"invited{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, room, "Xena") as xena:
        async with xmpp_account_at(hub, "eve", XMPP_STRANGER_DOMAIN) as eve:
            invite_directly(eve, jid_of(alice), room)  # a domain no rule allows
        invite_via_room(xena, jid_of(alice), room)
        portal = await alice.wait_for_invite(timeout=WAIT)
        await alice.join(portal)
        xena.send_groupchat(room, "welcome, Alice")
        await alice.wait_for(lambda e: _body(e) == "welcome, Alice", room_id=portal, timeout=WAIT)
        assert len(alice.invites) == 1, alice.invites  # the stranger's invitation made nothing
        # Someone outside the (now bridged) room invites Bob into it, and Xena, in a room that
        # does not show her address, invites him directly: neither counts. Xena's invitation
        # through the room, behind them, does.
        async with xmpp_account(hub, "mallory") as mallory:
            invite_directly(mallory, jid_of(bob), room)
        invite_directly(xena, jid_of(bob), room)
        invite_via_room(xena, jid_of(carol), room)
        await carol.wait_for_invite(timeout=WAIT)
        assert bob.invites == [], bob.invites


async def test_an_invitation_flood_from_xmpp_is_cut_off(hub: Hub) -> None:
    room = f"flood{next(_names)}@{hub.prosody.muc_domain}"
    other = f"other{next(_names)}@{hub.prosody.muc_domain}"
    users = [await hub.user("target") for _ in range(PER_INVITER + 2)]
    async with (
        muc_occupant(hub, room, "Xena") as xena,
        muc_occupant(hub, other, "Xavier") as xavier,
    ):
        for user in users:
            invite_via_room(xena, jid_of(user), room)
        # Another room's invitation, behind the flood: once it is there, the flood's
        # refusals (made as the invitations came in) are final.
        invite_via_room(xavier, jid_of(users[-1]), other)
        await users[-1].wait_for_invite(timeout=WAIT)
        await eventually(lambda: len([u for u in users if u.invites]) == PER_INVITER + 1,
                         f"{PER_INVITER} invitations from {room} and one from {other}",
                         timeout=WAIT)  # fmt: skip
        invited = [u for u in users[:-1] if u.invites]
        assert len(invited) == PER_INVITER, [u.mxid for u in invited]


async def test_matrix_invitations_reach_xmpp_directly_too(hub: Hub) -> None:
    """An open room: the room's own invitation (tests/e2e/test_xmpp_invitations.py) if it lets
    Alice invite (Prosody does, ejabberd not by default), and a direct one from her either way."""
    room = f"asked{next(_names)}@{hub.prosody.muc_domain}"
    async with muc_occupant(hub, room, "Xena"), xmpp_account(hub, "xavier") as xavier:
        alice = await hub.user("alice")  # creates the room, so she may invite into it
        room_id = await alice.create_room(invite=[hub.bot])
        await alice.wait_for(lambda e: e["type"] == "m.room.member" and e["state_key"] == hub.bot
                             and e["content"]["membership"] == "join", room_id=room_id,
                             timeout=WAIT)  # fmt: skip
        await alice.send_text(room_id, f"!pontis bridge xmpp {room}")
        await alice.wait_for(lambda e: "now bridged" in _body(e), room_id=room_id, timeout=WAIT)
        await alice.invite(room_id, ghost_of(xavier.jid))
        invitation = await xavier.wait_for_message(
            lambda m: m.xml.find("{jabber:x:conference}x") is not None
            and m["from"].bare == jid_of(alice).lower(), timeout=WAIT,
        )  # fmt: skip
        assert invitation.xml.find("{jabber:x:conference}x").get("jid") == room


async def test_hosted_rooms_private_messages_typing_and_admin_lists(hub: Hub) -> None:
    alice = await hub.user("alice")
    nick = _nick(alice)
    localpart = f"salon{next(_names)}"
    room_id = await alice.create_room(preset="public_chat", room_alias_name=localpart)
    muc = f"{localpart}\\3ahub.test@rooms.xmpp.test"
    async with xmpp_account(hub, "xeno") as xeno:
        await xeno.join_muc(muc, "Xeno")
        ghost = ghost_of(xeno.jid)

        query = xeno.client.make_iq_get(ito=JID(muc))
        query.append(ET.fromstring(f"<query xmlns='{ADMIN}'><item affiliation='owner'/></query>"))
        answer: Iq = await query.send(timeout=WAIT)
        owners = [i.get("jid") for i in answer.xml.iter(f"{{{ADMIN}}}item")]
        assert owners == [jid_of(alice).lower()]
        change = xeno.client.make_iq_set(ito=JID(muc))
        change.append(ET.fromstring(f"<query xmlns='{ADMIN}'><item affiliation='owner' "
                                    f"jid='{xeno.jid}'/></query>"))  # fmt: skip
        with pytest.raises(Exception) as refused:
            await change.send(timeout=WAIT)
        assert "forbidden" in str(refused.value.iq["error"]["condition"])  # type: ignore[attr-defined]

        xeno.chat_state(muc, "composing", groupchat=True)
        await alice.wait_for_ephemeral(lambda e: e["type"] == "m.typing"
                                       and ghost in e["content"]["user_ids"], room_id=room_id,
                                       timeout=WAIT)  # fmt: skip
        await alice.typing(room_id, True)
        await xeno.wait_for_message(lambda m: m["from"] == JID(f"{muc}/{nick}")
                                    and m["chat_state"] == "composing", timeout=WAIT)  # fmt: skip

        xeno.send_chat(f"{muc}/{nick}", "just between us")
        dm = await alice.wait_for_invite(timeout=WAIT)
        await alice.join(dm)
        event = await alice.wait_for(lambda e: _body(e) == "just between us", room_id=dm,
                                     timeout=WAIT)  # fmt: skip
        assert event["sender"] == ghost
        await alice.send_text(dm, "agreed")
        got = await xeno.wait_for_message(lambda m: m["body"] == "agreed", timeout=WAIT)
        assert got["type"] == "chat" and got["from"] == JID(f"{muc}/{nick}")


@contextlib.asynccontextmanager
async def xmpp_account_at(hub: Hub, name: str, domain: str) -> AsyncIterator[XmppUser]:
    user = XmppUser(hub.prosody.register(f"{name}{next(_names)}", domain=domain), "pw",
                    hub.prosody.c2s_port)  # fmt: skip
    await user.connect()
    try:
        yield user
    finally:
        await user.close()
