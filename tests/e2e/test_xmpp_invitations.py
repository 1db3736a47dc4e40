"""Matrix users invite XMPP people into a members-only MUC (issue #14), against a real XMPP
server (Prosody, then ejabberd) and a real Synapse: the room itself invites them and makes them
members, so they can join; a Matrix user the room does not let invite is told so, and nobody
becomes a member."""

from __future__ import annotations

import itertools
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, Iq

from tests.e2e.conftest import XMPP_COMPONENT, XMPP_SERVERS, Hub, hub_for
from tests.e2e.test_xmpp import ghost_of, jid_of, muc_occupant, xmpp_account
from tests.e2e.xmpp_client import XmppUser

pytestmark = pytest.mark.e2e
_names = itertools.count(1)
WAIT = 45.0
ADMIN = "http://jabber.org/protocol/muc#admin"
OWNER = "http://jabber.org/protocol/muc#owner"
MUC_USER = "http://jabber.org/protocol/muc#user"


@pytest.fixture(params=XMPP_SERVERS)
def hub(request: pytest.FixtureRequest) -> Hub:
    return hub_for(request)


async def set_affiliations(owner: XmppUser, room: str, affiliations: dict[str, str]) -> None:
    for jid, affiliation in affiliations.items():  # one a query: Prosody reads the first only
        iq = owner.client.make_iq_set(ito=JID(room))
        query = ET.SubElement(iq.xml, f"{{{ADMIN}}}query")
        ET.SubElement(query, f"{{{ADMIN}}}item", {"jid": jid, "affiliation": affiliation})
        await iq.send(timeout=WAIT)


async def make_members_only(owner: XmppUser, room: str) -> None:
    iq = owner.client.make_iq_set(ito=JID(room))
    form = ET.SubElement(ET.SubElement(iq.xml, f"{{{OWNER}}}query"), "{jabber:x:data}x",
                         {"type": "submit"})  # fmt: skip
    for var, value in (("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"),
                       ("muc#roomconfig_membersonly", "1")):  # fmt: skip
        field = ET.SubElement(form, "{jabber:x:data}field", {"var": var})
        ET.SubElement(field, "{jabber:x:data}value").text = value
    await iq.send(timeout=WAIT)


async def members(owner: XmppUser, room: str) -> set[str]:
    iq = owner.client.make_iq_get(ito=JID(room))
    ET.SubElement(ET.SubElement(iq.xml, f"{{{ADMIN}}}query"), f"{{{ADMIN}}}item",
                  {"affiliation": "member"})  # fmt: skip
    answer: Iq = await iq.send(timeout=WAIT)
    return {str(i.get("jid")).lower() for i in answer.xml.iter(f"{{{ADMIN}}}item")}


def _invitation_to(room: str) -> Any:
    def match(m: Any) -> bool:
        invite = m.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite")
        return invite is not None and m["from"] == JID(room)

    return match


async def test_a_matrix_user_invites_an_xmpp_person_into_a_members_only_muc(hub: Hub) -> None:
    room = f"agency{next(_names)}@{hub.prosody.muc_domain}"
    alice, bob = await hub.user("alice"), await hub.user("bob")
    async with (
        muc_occupant(hub, room, "Xena") as xena,
        xmpp_account(hub, "xavier") as xavier,
        xmpp_account(hub, "yann") as yann,
    ):
        # The agency's room: the bridge and Bob are members, Alice may add members (admin).
        await set_affiliations(xena, room, {
            f"bridge@{XMPP_COMPONENT}": "member",
            jid_of(alice): "admin", jid_of(bob): "member",
        })  # fmt: skip
        await make_members_only(xena, room)
        # Alice bridges it into a room of hers (there she, and Bob, may invite in Matrix).
        room_id = await alice.create_room(invite=[hub.bot, bob.mxid])
        await bob.join(room_id)
        await alice.wait_for(lambda e: e["type"] == "m.room.member" and e["state_key"] == hub.bot
                             and e["content"]["membership"] == "join", room_id=room_id,
                             timeout=WAIT)  # fmt: skip
        await alice.send_text(room_id, f"!pontis bridge xmpp {room}")
        await alice.wait_for(lambda e: "now bridged" in str(e.get("content", {}).get("body")),
                             room_id=room_id, timeout=WAIT)  # fmt: skip

        # Hostile: Bob is only a member; the room refuses his invitation, he is told, and
        # Yann does not become a member.
        yann_ghost = ghost_of(yann.jid)
        await bob.invite(room_id, yann_ghost)
        declined = await bob.wait_for(
            lambda e: e["type"] == "m.room.member" and e["state_key"] == yann_ghost
            and e["content"].get("membership") == "leave", room_id=room_id, timeout=WAIT,
        )  # fmt: skip
        reason = declined["content"].get("reason", "")
        assert "refused your invitation" in reason and "admins" in reason, reason
        assert yann.jid.lower() not in await members(xena, room)
        assert not yann.seen(_invitation_to(room))

        # Alice, an admin of the room, invites Xavier: the room invites him from its own
        # address, on her behalf, and he is a member now, so he can join.
        await alice.invite(room_id, ghost_of(xavier.jid))
        invitation = await xavier.wait_for_message(_invitation_to(room), timeout=WAIT)
        invite = invitation.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite")
        # Her real address, or (a semi-anonymous room, Prosody) her occupant in the room.
        inviter = JID(invite.get("from"))
        nick = alice.mxid[1:].split(":")[0].capitalize()
        assert inviter.bare == jid_of(alice).lower() or inviter == JID(f"{room}/{nick}"), inviter
        assert xavier.jid.lower() in await members(xena, room)
        await xavier.join_muc(room, "Xavier")
        xavier.send_groupchat(room, "thanks for the invitation")
        await alice.wait_for(lambda e: e.get("content", {}).get("body") ==
                             "thanks for the invitation", room_id=room_id, timeout=WAIT)  # fmt: skip


async def test_a_room_the_bridge_hosts_invites_from_its_own_address(hub: Hub) -> None:
    alice = await hub.user("alice")
    localpart = f"salon{next(_names)}"
    room_id = await alice.create_room(preset="public_chat", room_alias_name=localpart)
    muc = f"{localpart}\\3ahub.test@rooms.xmpp.test"
    async with xmpp_account(hub, "xeno") as xeno, xmpp_account(hub, "xavier") as xavier:
        await xeno.join_muc(muc, "Xeno")  # the room is a portal from its first occupant on
        await alice.wait_for(lambda e: e["type"] == "m.room.member"
                             and e["state_key"] == ghost_of(xeno.jid), room_id=room_id,
                             timeout=WAIT)  # fmt: skip
        await alice.invite(room_id, ghost_of(xavier.jid))
        invitation = await xavier.wait_for_message(_invitation_to(muc), timeout=WAIT)
        invite = invitation.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite")
        assert JID(invite.get("from")).bare == jid_of(alice).lower()
        await xavier.join_muc(muc, "Xavier")
        xavier.send_groupchat(muc, "here I am")
        await alice.wait_for(lambda e: e.get("content", {}).get("body") == "here I am",
                             room_id=room_id, timeout=WAIT)  # fmt: skip
