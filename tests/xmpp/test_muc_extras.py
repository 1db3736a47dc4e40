"""Private messages, invitations, chat states and admin lists in MUCs, without a server: the
hostile cases first (strangers, forged or stale senders, floods, refused domains). The stream is
real slixmpp; stanzas are fed to it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import Message, Presence
from slixmpp.xmlstream import StanzaBase

from bridge.core import (
    ChatInfo,
    MatrixTyping,
    NotFound,
    NotSupported,
    PermanentError,
    PortalKey,
    RemoteChatInfo,
    RemoteMessage,
    RemoteTyping,
    RemoteUserID,
)
from bridge.core.federation import FederationPolicy
from bridge.core.ghost_names import GhostNames
from bridge.core.ids import NetworkID
from bridge.portal.models import Portal, RemoteInput
from bridge.xmpp.chat_states import ChatStates
from bridge.xmpp.component import Component
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.ids import NETWORK, dm_key, muc_key
from bridge.xmpp.inbound import PRIVATE, Inbound, remote_input
from bridge.xmpp.invites import PER_INVITER, Invitations, InviteLimits
from bridge.xmpp.moderation import MucModeration
from bridge.xmpp.muc import MucTracker
from bridge.xmpp.private import PrivateMessages
from tests.xmpp.test_hosted import ROOM as HOSTED_ROOM
from tests.xmpp.test_hosted import XENA, MemoryStore, iq, make_rooms, presence

DOMAIN = "matrix.xmpp.example"
ALICE_MXID = "@alice:hub.example"
ALICE = "alice\\3ahub.example@" + DOMAIN
ALICE_OCCUPANT = f"{ALICE}/pontis"
ROOM = "team@muc.xmpp.example"
NS = "jabber:component:accept"
ADMIN = "http://jabber.org/protocol/muc#admin"
XMPP_ONLY = [{"network": "xmpp", "remote": ["xmpp.example", "*.xmpp.example"], "matrix": ["*"]}]


class FakeContext:
    log = logging.getLogger("test.xmpp.muc_extras")
    bot_mxid = "@bot:hub.example"
    domain = "hub.example"

    def __init__(self) -> None:
        self.federation = FederationPolicy(XMPP_ONLY, "hub.example")
        self.ghost_names = GhostNames("hub.example")
        self.accepted: list[RemoteInput] = []
        self.queued: list[Any] = []
        self.portals: dict[str, Portal] = {}
        self.kv: dict[str, str] = {}
        self.memberships: dict[tuple[str, str], str] = {}
        self.tasks: list[asyncio.Task[Any]] = []

    @property
    def store(self) -> Any:
        return self

    async def get_portal(self, remote_id: str) -> Portal | None:
        return self.portals.get(remote_id)

    async def kv_get(self, key: str) -> str | None:
        return self.kv.get(key)

    async def kv_set(self, key: str, value: str) -> None:
        self.kv[key] = value

    async def matrix_membership(self, room_id: str, mxid: str) -> str | None:
        return self.memberships.get((room_id, mxid))

    async def accept_remote(self, item: RemoteInput) -> bool:
        self.accepted.append(item)
        return True

    async def queue_remote_event(self, event: Any) -> None:
        self.queued.append(event)

    def parse_ghost_mxid(self, mxid: str) -> RemoteUserID | None:
        return self.ghost_names.parse(NetworkID("xmpp"), mxid)

    def background(self, coro: Any, *, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task

    async def settle(self) -> None:
        await asyncio.gather(*self.tasks)


def make_cfg() -> XmppConfig:
    return XmppConfig(jid=DOMAIN, host="127.0.0.1", port=5347, secret="s", rooms_domain="",
                      upload_service="", muc_nick="bridge", history_on_join=0,
                      max_file_bytes=1000)  # fmt: skip


async def _nothing(*_: Any) -> None:
    return None


def make_component(sent: list[StanzaBase]) -> Component:
    component = Component(DOMAIN, make_cfg(), FakeContext.log, on_stanza=_nothing,
                          on_state=_nothing)  # fmt: skip
    component.up = True
    component.xmpp.send = lambda stanza, *_, **__: sent.append(stanza)  # type: ignore[method-assign]
    return component


def stanza(component: Component, raw: str) -> Any:
    return component.xmpp._build_stanza(ET.fromstring(raw))


def message(component: Component, inner: str, *, frm: str, to: str, mtype: str = "chat") -> Message:
    built = stanza(component, f"<message xmlns='{NS}' from='{frm}' to='{to}' type='{mtype}' "
                   f"id='m1'>{inner}</message>")  # fmt: skip
    assert isinstance(built, Message)
    return built


def occupant_presence(component: Component, nick: str, to: str, *, real: str = "",
                      own: bool = False, gone: bool = False) -> Presence:  # fmt: skip
    jid = f" jid='{real}'" if real else ""
    status = "<status code='110'/>" if own else ""
    kind = " type='unavailable'" if gone else ""
    built = stanza(component, f"<presence xmlns='{NS}' from='{ROOM}/{nick}' to='{to}'{kind}><x "
                   f"xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' "
                   f"role='participant'{jid}/>{status}</x></presence>")  # fmt: skip
    assert isinstance(built, Presence)
    return built


# --- private messages in bridged MUCs ----------------------------------------------------------


@pytest.fixture
def bridged() -> tuple[PrivateMessages, Component, FakeContext, MucTracker, list[StanzaBase]]:
    sent: list[StanzaBase] = []
    component = make_component(sent)
    ctx = FakeContext()
    mucs = MucTracker()
    mucs.room(ROOM)
    mucs.on_presence(occupant_presence(component, "Alice", ALICE_OCCUPANT, own=True))
    mucs.on_presence(
        occupant_presence(component, "Xena", ALICE_OCCUPANT, real="xena@xmpp.example/a")
    )
    mucs.on_presence(occupant_presence(component, "Anon", ALICE_OCCUPANT))
    moderation = MucModeration(ctx, f"bridge@{DOMAIN}/pontis", lambda _: None, mucs)  # type: ignore[arg-type]

    async def puppet_in(room: str, mxid: str, name: str) -> str:
        return ALICE_OCCUPANT

    private = PrivateMessages(ctx, make_cfg(), component, None, mucs, moderation, puppet_in,
                              None)  # type: ignore[arg-type]  # fmt: skip
    return private, component, ctx, mucs, sent


async def test_private_messages_only_from_current_occupants_of_rooms_we_are_in(
    bridged: Any,
) -> None:
    private, component, ctx, mucs, sent = bridged
    hostile = [
        message(component, "<body>hi</body>", frm="other@muc.xmpp.example/Xena", to=ALICE_OCCUPANT),
        message(component, "<body>hi</body>", frm=f"{ROOM}/Ghost", to=ALICE_OCCUPANT),  # not there
        message(component, "<body>hi</body>", frm=f"{ROOM}/Alice", to=ALICE_OCCUPANT),  # our own
        message(component, "<body>hi</body>", frm=f"{ROOM}/Xena", to=f"{ALICE}/other"),  # not ours
        message(component, "<body>hi</body>", frm=ROOM, to=ALICE_OCCUPANT),  # the room itself
    ]
    for msg in hostile:
        if private.relayed(msg):
            await private.from_bridged(msg)
    mucs.on_presence(occupant_presence(component, "Xena", ALICE_OCCUPANT, gone=True))
    await private.from_bridged(
        message(component, "<body>late</body>", frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT)
    )
    assert ctx.accepted == [] and ctx.queued == [] and sent == []


async def test_a_private_message_is_a_dm_portal_per_occupant_from_the_rooms_ghost(
    bridged: Any,
) -> None:
    private, component, ctx, _, _ = bridged
    await private.from_bridged(
        message(component, "<body>psst</body>", frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT)
    )
    await private.from_bridged(
        message(component, "<body>psst</body>", frm=f"{ROOM}/Anon", to=ALICE_OCCUPANT)
    )
    known, anonymous = ctx.accepted
    assert known.kind == PRIVATE and known.portal == dm_key(f"{ROOM}/Xena", ALICE_MXID)
    assert known.payload["sender"] == "xena@xmpp.example"  # the room showed her real JID
    assert anonymous.payload["sender"] == f"{ROOM}/Anon"
    await private.from_bridged(
        message(
            component,
            "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
            frm=f"{ROOM}/Xena",
            to=ALICE_OCCUPANT,
        )
    )
    [typing] = ctx.queued
    assert isinstance(typing, RemoteTyping) and typing.typing and not typing.create_portal


async def test_answers_go_back_as_private_messages_from_our_occupant(bridged: Any) -> None:
    private, component, ctx, *_ = bridged
    ctx.portals[ROOM] = Portal(network=NETWORK, remote_id=ROOM, mxid="!r:hub.example")
    ctx.memberships[("!r:hub.example", ALICE_MXID)] = "join"
    portal = Portal(network=NETWORK, remote_id=f"{ROOM}/Xena", receiver=ALICE_MXID, is_direct=True)
    assert await private.route(portal, ALICE_MXID, "Alice") == (component, ALICE_OCCUPANT,
                                                                 f"{ROOM}/Xena")  # fmt: skip
    gone = Portal(network=NETWORK, remote_id=f"{ROOM}/Left", receiver=ALICE_MXID, is_direct=True)
    with pytest.raises(PermanentError) as err:
        await private.route(gone, ALICE_MXID, "Alice")
    assert "not in" in err.value.user_message


# --- private messages in hosted rooms -----------------------------------------------------------


async def test_hosted_private_messages_need_an_occupant_and_a_matrix_member() -> None:
    rooms, sent, hctx = await make_rooms(MemoryStore())
    await rooms._on_stanza(presence(rooms, XENA, f"{HOSTED_ROOM}/Xena"))
    ctx = FakeContext()
    private = PrivateMessages(ctx, make_cfg(), make_component([]), rooms, MucTracker(),
                              None, None, None)  # type: ignore[arg-type]  # fmt: skip
    rooms.on_private = private.from_hosted
    comp = rooms.component
    before = len(sent)
    await rooms._on_stanza(message(comp, "<body>x</body>", frm="mallory@evil.example/x",
                                   to=f"{HOSTED_ROOM}/Alice"))  # fmt: skip
    await rooms._on_stanza(message(comp, "<body>x</body>", frm=XENA, to=f"{HOSTED_ROOM}/Nobody"))
    errors = [s["error"]["condition"] for s in sent[before:]]
    assert errors == ["not-acceptable", "item-not-found"] and ctx.accepted == []
    await rooms._on_stanza(message(comp, "<body>hello Alice</body>", frm=XENA,
                                   to=f"{HOSTED_ROOM}/Alice"))  # fmt: skip
    [item] = ctx.accepted
    assert item.portal == dm_key(f"{HOSTED_ROOM}/Xena", ALICE_MXID)
    assert item.payload["sender"] == "xena@xmpp.example"
    portal = Portal(network=NETWORK, remote_id=f"{HOSTED_ROOM}/Xena", receiver=ALICE_MXID,
                    is_direct=True)  # fmt: skip
    assert await private.route(portal, ALICE_MXID, "Alice") == (comp, f"{HOSTED_ROOM}/Alice", XENA)
    del hctx


# --- admin lists of hosted rooms -----------------------------------------------------------------


async def test_admin_lists_come_from_the_power_levels_and_changes_are_forbidden() -> None:
    rooms, sent, _ = await make_rooms(MemoryStore())
    await rooms._on_stanza(presence(rooms, XENA, f"{HOSTED_ROOM}/Xena"))

    def query(affiliation: str) -> str:
        return f"<query xmlns='{ADMIN}'><item affiliation='{affiliation}'/></query>"

    [stranger] = await iq(rooms, sent, "mallory@evil.example/x", HOSTED_ROOM, query("owner"))
    assert stranger["error"]["condition"] == "forbidden"
    [owners] = await iq(rooms, sent, XENA, HOSTED_ROOM, query("owner"))
    items = owners.xml.findall(f"{{{ADMIN}}}query/{{{ADMIN}}}item")
    assert [(i.get("jid"), i.get("nick")) for i in items] == [(ALICE, "Alice")]  # level 100
    [members] = await iq(rooms, sent, XENA, HOSTED_ROOM, query("member"))
    items = members.xml.findall(f"{{{ADMIN}}}query/{{{ADMIN}}}item")
    assert [i.get("jid") for i in items] == ["xena@xmpp.example"]
    [outcasts] = await iq(rooms, sent, XENA, HOSTED_ROOM, query("outcast"))
    assert outcasts["error"]["condition"] == "forbidden"
    before = len(sent)
    rooms.component.xmpp._spawn_event(ET.fromstring(
        f"<iq xmlns='{NS}' type='set' id='s1' from='{XENA}' to='{HOSTED_ROOM}'><query "
        f"xmlns='{ADMIN}'><item affiliation='owner' jid='xena@xmpp.example'/></query></iq>"))  # fmt: skip
    await asyncio.sleep(0.05)
    [refused] = [s for s in sent[before:] if s["id"] == "s1"]
    assert refused["type"] == "error" and refused["error"]["condition"] == "forbidden"


# --- chat states in MUCs -------------------------------------------------------------------------


async def test_typing_in_a_muc_comes_from_our_occupant_only_once_it_is_there() -> None:
    sent: list[StanzaBase] = []
    component = make_component(sent)
    mucs = MucTracker()
    mucs.room(ROOM)

    async def reference(*_: Any) -> str:
        return "sid"

    states = ChatStates(make_cfg(), component, None, mucs, None, reference)  # type: ignore[arg-type]
    portal = Portal(network=NETWORK, remote_id=ROOM, mxid="!r:hub.example")
    await states.typing(MatrixTyping(portal=portal, sender=ALICE_MXID, typing=True))
    assert sent == []  # not joined: typing is no reason to join
    mucs.on_presence(occupant_presence(component, "Alice", ALICE_OCCUPANT, own=True))
    await states.typing(MatrixTyping(portal=portal, sender=ALICE_MXID, typing=True))
    [composing] = sent
    assert str(composing["from"]) == ALICE_OCCUPANT and str(composing["to"]) == ROOM
    assert composing["type"] == "groupchat" and composing["chat_state"] == "composing"


async def test_hosted_rooms_show_matrix_typing_to_every_occupant() -> None:
    rooms, sent, _ = await make_rooms(MemoryStore())
    await rooms._on_stanza(presence(rooms, XENA, f"{HOSTED_ROOM}/Xena"))

    async def reference(*_: Any) -> str:
        return "sid"

    states = ChatStates(make_cfg(), make_component([]), rooms, MucTracker(), None, reference)  # type: ignore[arg-type]
    before = len(sent)
    portal = Portal(network=NETWORK, remote_id=HOSTED_ROOM, mxid="!r:hub.example")
    await states.typing(MatrixTyping(portal=portal, sender=ALICE_MXID, typing=False))
    [paused] = sent[before:]
    assert str(paused["from"]) == f"{HOSTED_ROOM}/Alice" and str(paused["to"]) == XENA
    assert paused["chat_state"] == "paused"


# --- invitations -----------------------------------------------------------------------------------


def direct_invite(component: Component, frm: str, room: str, to: str = ALICE) -> Message:
    return message(component, f"<x xmlns='jabber:x:conference' jid='{room}'/>", frm=frm, to=to,
                   mtype="normal")  # fmt: skip


class FakeRooms:
    """invites.Rooms without a server: joining works unless the room is ``closed…``; every
    joined room shows ``present`` as its occupants' real JIDs."""

    def __init__(self, bridge_room: Any = None) -> None:
        self.joined: list[str] = []
        self.left: list[str] = []
        self.present = {"xena@xmpp.example"}
        self.occupied: dict[str, set[str]] = {}
        self._bridge_room = bridge_room

    async def bridge_room(self, room: str, mxid: str) -> tuple[PortalKey, ChatInfo]:
        if self._bridge_room is not None:
            result: tuple[PortalKey, ChatInfo] = await self._bridge_room(room, mxid)
            self.occupied[room] = set(self.present)
            return result
        if room.startswith("closed"):
            raise NotFound("closed", user_message="closed")
        self.joined.append(room)
        self.occupied[room] = set(self.present)
        return muc_key(room), ChatInfo(name=room.split("@")[0], is_direct=False)

    def real_occupants(self, room: str) -> set[str]:
        return self.occupied.get(room, set())

    def leave_unbridged(self, room: str) -> None:
        self.left.append(room)

    def owns(self, domain: str) -> bool:
        return domain in (DOMAIN, "rooms.xmpp.example")


@pytest.fixture
def invitations() -> tuple[Invitations, Component, FakeContext, list[str], list[float]]:
    sent: list[StanzaBase] = []
    component = make_component(sent)
    ctx = FakeContext()
    now = [0.0]
    rooms = FakeRooms()
    inv = Invitations(ctx, make_cfg(), component, rooms, InviteLimits(lambda: now[0]))  # type: ignore[arg-type]
    return inv, component, ctx, rooms.joined, now


async def test_invitations_from_refused_domains_or_to_refused_rooms_change_nothing(
    invitations: Any,
) -> None:
    inv, component, ctx, joined, _ = invitations
    await inv.from_xmpp(direct_invite(component, "mallory@evil.example/x", ROOM))
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", "den@muc.evil.example"))
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", "not a jid"))
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", f"{ROOM}/nick"))
    ghost = f"xmpp_someone=40xmpp.example\\3ahub.example@{DOMAIN}"
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", ROOM, to=ghost))
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", "closed@muc.xmpp.example"))
    await ctx.settle()
    assert joined == [] and ctx.queued == []


async def test_an_invitation_joins_the_room_and_invites_the_matrix_user_once(
    invitations: Any,
) -> None:
    inv, component, ctx, joined, _ = invitations
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", ROOM))
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", ROOM))  # repeated
    mediated = message(component, "<x xmlns='http://jabber.org/protocol/muc#user'><invite "
                       "from='xavier@xmpp.example/b'/></x>", frm="ops@muc.xmpp.example", to=ALICE,
                       mtype="normal")  # fmt: skip
    await inv.from_xmpp(mediated)
    await ctx.settle()
    assert joined == [ROOM, "ops@muc.xmpp.example"]
    first, second = ctx.queued
    assert isinstance(first, RemoteChatInfo) and first.portal == muc_key(ROOM)
    assert first.info.matrix_users == [ALICE_MXID] and first.create_portal
    assert second.portal == muc_key("ops@muc.xmpp.example")


async def test_an_invitation_flood_is_cut_off_and_heals_with_time(invitations: Any) -> None:
    inv, component, ctx, joined, now = invitations
    for n in range(PER_INVITER + 3):
        await inv.from_xmpp(
            direct_invite(component, "xena@xmpp.example/a", f"r{n}@muc.xmpp.example")
        )
    await ctx.settle()
    assert len(joined) == PER_INVITER
    now[0] += 3600
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", "later@muc.xmpp.example"))
    await ctx.settle()
    assert joined[-1] == "later@muc.xmpp.example"


async def test_matrix_invitations_are_checked_before_the_room_is_asked_and_dms_refuse(
    invitations: Any,
) -> None:
    """What the room is then asked: tests/xmpp/test_matrix_invites.py."""
    _, component, ctx, *_ = invitations
    asked: list[tuple[str, str, str]] = []

    class Outgoing:
        async def invite(self, portal: Portal, inviter: str, user: str) -> None:
            asked.append((portal.remote_id, inviter, user))

    inv = Invitations(ctx, make_cfg(), component, FakeRooms(), InviteLimits(),  # type: ignore[arg-type]
                      outgoing=Outgoing())  # type: ignore[arg-type]  # fmt: skip
    dm = Portal(network=NETWORK, remote_id="xena@xmpp.example", receiver=ALICE_MXID, is_direct=True)
    with pytest.raises(NotSupported):
        await inv.from_matrix(dm, ALICE_MXID, RemoteUserID("xavier@xmpp.example"))
    room = Portal(network=NETWORK, remote_id=ROOM, mxid="!r:hub.example")
    with pytest.raises(NotSupported):  # an occupant known by nick has no address to invite
        await inv.from_matrix(room, ALICE_MXID, RemoteUserID(f"{ROOM}/Anon"))
    await inv.from_matrix(room, ALICE_MXID, RemoteUserID("xavier@xmpp.example"))
    assert asked == [(ROOM, ALICE_MXID, "xavier@xmpp.example")]
    for _ in range(PER_INVITER):
        try:
            await inv.from_matrix(room, ALICE_MXID, RemoteUserID("xavier@xmpp.example"))
        except NotSupported as err:
            assert "Too many" in err.user_message
            break
    else:
        pytest.fail("a flood of invitations from Matrix was not cut off")


async def test_a_stored_private_message_converts_to_the_rooms_ghost_in_the_dm() -> None:
    sent: list[StanzaBase] = []
    component = make_component(sent)
    ctx = FakeContext()
    inbound = Inbound(ctx, make_cfg(), component, MucTracker(), None)  # type: ignore[arg-type]
    key = dm_key(f"{ROOM}/Xena", ALICE_MXID)
    msg = message(component, "<body>psst</body>", frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT)
    item = remote_input(key, PRIVATE, msg, dedupe="d", sender="xena@xmpp.example", name="Xena")
    [event] = await inbound.convert(item)
    assert isinstance(event, RemoteMessage) and event.sender == "xena@xmpp.example"
    assert event.chat_info is not None and event.chat_info.members == ["xena@xmpp.example"]
    assert event.chat_info.matrix_users == [ALICE_MXID] and event.parts[0].text == "psst"


async def test_invitations_to_one_room_join_it_one_at_a_time() -> None:
    component = make_component([])
    ctx = FakeContext()
    running: list[str] = []
    overlaps: list[str] = []

    async def bridge_room(room: str, mxid: str) -> tuple[PortalKey, ChatInfo]:
        if running:
            overlaps.append(mxid)
        running.append(mxid)
        await asyncio.sleep(0.01)
        running.remove(mxid)
        return muc_key(room), ChatInfo(name="team")

    inv = Invitations(ctx, make_cfg(), component, FakeRooms(bridge_room))  # type: ignore[arg-type]
    for n in range(3):
        await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", ROOM,
                                          to=f"user{n}\\3ahub.example@{DOMAIN}"))  # fmt: skip
    await ctx.settle()
    assert overlaps == [] and len(ctx.queued) == 3 and inv._joining == {}
