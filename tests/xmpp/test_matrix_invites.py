"""Matrix → XMPP invitations (issue #14), without a server: a bridged MUC is asked to invite
(XEP-0045 §7.8.2) by the inviter's own occupant and may refuse; a hosted room invites from its
own address. Hostile cases first: a refusing room, an inviter the room does not let in, an
inviter trying to use someone else's occupant, a domain the federation policy blocks. The
stream is real slixmpp; the room's answers are fed to it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import Iq, Message
from slixmpp.xmlstream import StanzaBase

from bridge.core import NotSupported, PermanentError, RemoteUserID
from bridge.core.federation import FederationPolicy
from bridge.core.ghost_invites import GhostInvites
from bridge.core.ghost_names import GhostNames
from bridge.core.permissions import Permissions
from bridge.portal.models import Portal
from bridge.xmpp.component import Component
from bridge.xmpp.ids import NETWORK
from bridge.xmpp.invites import Invitations, InviteLimits
from bridge.xmpp.matrix_invites import MatrixInvitations
from bridge.xmpp.protocol.escaping import mxid_to_jid
from tests.xmpp.test_muc_extras import DOMAIN, FakeRooms, make_cfg, make_component

ROOM = "agency@muc.xmpp.example"
HOSTED = "salon\\3ahub.example@rooms.xmpp.example"
ALICE, BOB = "@alice:hub.example", "@bob:hub.example"
XAVIER = "xavier@xmpp.example"
NS = "jabber:component:accept"
MUC_USER = "http://jabber.org/protocol/muc#user"
DISCO = "http://jabber.org/protocol/disco#info"


def occupant_of(mxid: str) -> str:
    return f"{mxid_to_jid(mxid, DOMAIN)}/pontis"


class Context:
    log = logging.getLogger("test.xmpp.matrix_invites")

    async def matrix_members(self, room_id: str) -> dict[str, str]:
        return {ALICE: "Alice", BOB: "Bob"}


class Room:
    """A MUC on the far side of the component: answers a mediated invitation with ``refuse``
    (an error condition) or not at all, and a disco#info query with its features."""

    def __init__(self, component: Component, *, refuse: str | None = None,
                 members_only: bool = True) -> None:  # fmt: skip
        self.component = component
        self.refuse = refuse
        self.members_only = members_only
        self.sent: list[StanzaBase] = []
        component.xmpp.send = self.receive  # type: ignore[method-assign]

    def receive(self, stanza: StanzaBase, *_: Any, **__: Any) -> None:
        self.sent.append(stanza)
        frm, to, sid = stanza["from"], stanza["to"], stanza["id"]
        if isinstance(stanza, Message) and str(to) == ROOM and self.refuse:
            self._answer(f"<message xmlns='{NS}' type='error' id='{sid}' from='{ROOM}' "
                         f"to='{frm}'><error type='auth'><{self.refuse} xmlns='urn:ietf:params:"
                         "xml:ns:xmpp-stanzas'/></error></message>")  # fmt: skip
        if isinstance(stanza, Iq) and str(to) == ROOM:
            feature = "muc_membersonly" if self.members_only else "muc_open"
            self._answer(f"<iq xmlns='{NS}' type='result' id='{sid}' from='{ROOM}' to='{frm}'>"
                         f"<query xmlns='{DISCO}'><feature var='{feature}'/></query></iq>")  # fmt: skip

    def _answer(self, xml: str) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(self.component.xmpp._spawn_event, ET.fromstring(xml))

    def invitations(self) -> list[Message]:
        return [s for s in self.sent if isinstance(s, Message) and s.xml.find(
            f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite") is not None]  # fmt: skip

    def direct(self) -> list[Message]:
        return [s for s in self.sent if isinstance(s, Message)
                and s.xml.find("{jabber:x:conference}x") is not None]  # fmt: skip


class Puppets:
    """joins.puppet_in: each Matrix user's own occupant; ``shut`` users are not let in."""

    def __init__(self, shut: set[str] | None = None) -> None:
        self.shut = shut or set()
        self.asked: list[tuple[str, str, str]] = []

    async def __call__(self, room: str, mxid: str, name: str) -> str:
        self.asked.append((room, mxid, name))
        if mxid in self.shut:
            raise PermanentError("joining failed: registration-required",
                                 user_message=f"Could not join {room}: registration-required.")  # fmt: skip
        return occupant_of(mxid)


def setup(room_kwargs: dict[str, Any] | None = None, puppets: Puppets | None = None,
          hosted: Any = None) -> tuple[Invitations, Room, Puppets]:  # fmt: skip
    component = make_component([])
    room = Room(component, **(room_kwargs or {}))
    puppets = puppets or Puppets()
    ctx: Any = Context()
    outgoing = MatrixInvitations(ctx, make_cfg(), component, hosted, puppets)
    inv = Invitations(ctx, make_cfg(), component, FakeRooms(), InviteLimits(),  # type: ignore[arg-type]
                      outgoing=outgoing)  # fmt: skip
    return inv, room, puppets


def portal(remote_id: str = ROOM) -> Portal:
    return Portal(network=NETWORK, remote_id=remote_id, mxid="!portal:hub.example")


# --- hostile -------------------------------------------------------------------------------------


@pytest.mark.parametrize("condition", ["forbidden", "not-allowed"])
async def test_a_members_only_room_that_refuses_tells_the_inviter_and_lets_nobody_in(
    condition: str,
) -> None:
    """A Matrix user without the right to invite in the MUC: the room refuses, the inviter is
    told why and what to do, and no direct invitation follows (it would let nobody in)."""
    inv, room, _ = setup({"refuse": condition})
    with pytest.raises(NotSupported) as refused:
        await inv.from_matrix(portal(), ALICE, RemoteUserID(XAVIER))
    message = refused.value.user_message
    assert ROOM in message and condition in message and XAVIER in message
    assert "Ask one of its admins" in message
    [asked] = room.invitations()
    assert str(asked["to"]) == ROOM
    assert room.direct() == []


async def test_another_refusal_says_so_without_blaming_the_inviters_rights() -> None:
    inv, room, _ = setup({"refuse": "item-not-found"})
    with pytest.raises(NotSupported) as refused:
        await inv.from_matrix(portal(), ALICE, RemoteUserID(XAVIER))
    assert "(item-not-found): nobody was invited" in refused.value.user_message
    assert room.direct() == []


async def test_an_inviter_the_room_does_not_let_in_invites_nobody() -> None:
    inv, room, _ = setup(puppets=Puppets(shut={ALICE}))
    with pytest.raises(NotSupported) as refused:
        await inv.from_matrix(portal(), ALICE, RemoteUserID(XAVIER))
    assert "registration-required" in refused.value.user_message
    assert "admins" in refused.value.user_message
    assert room.sent == []


async def test_the_invitation_comes_from_the_inviters_own_occupant_only() -> None:
    """Bob's invitation never borrows Alice's occupant (who may have more rights in the room),
    even right after hers."""
    inv, room, puppets = setup()
    await inv.from_matrix(portal(), ALICE, RemoteUserID(XAVIER))
    await inv.from_matrix(portal(), BOB, RemoteUserID(XAVIER))
    alice_asked, bob_asked = room.invitations()
    assert str(alice_asked["from"]) == occupant_of(ALICE)
    assert str(bob_asked["from"]) == occupant_of(BOB)
    for asked in (alice_asked, bob_asked):
        assert str(asked["to"]) == ROOM and asked["type"] == "normal"
        invite = asked.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite")
        assert invite is not None and invite.get("to") == XAVIER
    assert [(r, m) for r, m, _ in puppets.asked] == [(ROOM, ALICE), (ROOM, BOB)]
    assert puppets.asked[0][2] == "Alice"  # the occupant's nick is their display name
    # The query that follows each comes from the same occupant (the room answers in order).
    queries = [s for s in room.sent if isinstance(s, Iq)]
    assert [str(q["from"]) for q in queries] == [occupant_of(ALICE), occupant_of(BOB)]
    # Each then tells the person directly too, from their own address only.
    assert [str(d["from"]) for d in room.direct()] == [mxid_to_jid(m, DOMAIN) for m in (ALICE, BOB)]


async def test_a_federation_blocked_domain_is_refused_before_anything_is_sent() -> None:
    """The core checks the policy before it asks the connector: nothing reaches XMPP and the
    ghost declines, saying why."""
    inv, room, puppets = setup()
    policy = FederationPolicy(
        [{"network": "xmpp", "remote": ["xmpp.example"], "matrix": ["*"]}], "hub.example"
    )
    left: list[tuple[str, str, str]] = []
    asked: list[str] = []

    class Matrix:
        async def leave(self, room_id: str, reason: str = "", *, mxid: str | None = None) -> None:
            left.append((room_id, mxid or "", reason))

        async def join(self, room_id: str, *, mxid: str | None = None) -> None:
            return None

    class Portals:
        ghost_names = GhostNames("hub.example")

        async def ensure_ghost(self, *_: Any) -> None:
            return None

    class Loaded:
        class features:
            invites = True

        class client:
            @staticmethod
            async def handle_matrix_invite(p: Portal, inviter: str, user: RemoteUserID) -> None:
                asked.append(user)
                await inv.from_matrix(p, inviter, user)

    async def policy_domain(p: Portal, user: RemoteUserID | None = None) -> str:
        return (user or p.remote_id).rpartition("@")[2]

    invites = GhostInvites(
        store=None, matrix=Matrix(), portals=Portals(), connectors={},  # type: ignore[arg-type]
        permissions=Permissions({"hub.example": "user"}), federation=policy,
        client_for=lambda *_: Loaded(), policy_domain=policy_domain,  # type: ignore[arg-type,return-value]
        log=logging.getLogger("test"),
    )  # fmt: skip
    await invites.to_portal(portal(), ALICE, RemoteUserID("mallory@evil.example"))
    assert asked == [] and room.sent == [] and puppets.asked == []
    [(room_id, ghost, reason)] = left
    assert room_id == "!portal:hub.example" and "evil.example" in ghost and reason
    await invites.to_portal(portal(), ALICE, RemoteUserID(XAVIER))  # an allowed domain goes on
    assert asked == [XAVIER] and len(room.invitations()) == 1


# --- what works ----------------------------------------------------------------------------------


async def test_an_open_room_that_refuses_gets_a_direct_invitation_instead() -> None:
    """ejabberd refuses invitations from plain occupants by default; anyone may join an open
    room, so the person is told directly, from the inviter's own address."""
    inv, room, _ = setup({"refuse": "not-allowed", "members_only": False})
    await inv.from_matrix(portal(), ALICE, RemoteUserID(XAVIER))
    [direct] = room.direct()
    assert str(direct["from"]) == mxid_to_jid(ALICE, DOMAIN) and str(direct["to"]) == XAVIER
    assert direct.xml.find("{jabber:x:conference}x").get("jid") == ROOM


async def test_a_room_that_accepts_invites_and_a_direct_invitation_follows() -> None:
    """XEP-0249: the room's invitation may be blocked on the way; a client shows both as one."""
    inv, room, _ = setup({"members_only": True})
    await inv.from_matrix(portal(), ALICE, RemoteUserID(XAVIER))
    asked, query, direct = room.sent
    assert room.invitations() == [asked] and isinstance(query, Iq) and room.direct() == [direct]
    assert str(direct["to"]) == XAVIER and str(direct["from"]) == mxid_to_jid(ALICE, DOMAIN)


async def test_a_hosted_room_invites_from_its_own_address() -> None:
    sent: list[StanzaBase] = []
    rooms_component = make_component(sent)
    rooms_component.domain = "rooms.xmpp.example"

    class Hosted:
        component = rooms_component

        def hosts(self, room: str) -> bool:
            return room.endswith("@rooms.xmpp.example")

    inv, room, puppets = setup(hosted=Hosted())
    await inv.from_matrix(portal(HOSTED), ALICE, RemoteUserID(XAVIER))
    assert room.sent == [] and puppets.asked == []  # no occupant of ours: we are the room
    [msg] = sent
    assert str(msg["from"]) == HOSTED and str(msg["to"]) == XAVIER
    invite = msg.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite")
    assert invite is not None and invite.get("from") == mxid_to_jid(ALICE, DOMAIN)
    assert msg.xml.find("{jabber:x:conference}x").get("jid") == HOSTED
