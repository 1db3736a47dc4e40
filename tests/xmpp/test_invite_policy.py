"""Who may bring a Matrix user into a MUC by invitation: the hostile cases of the review of
invites.py (self-invitations into rooms someone else bridged, forged inviters, floods from many
addresses, invitations received by the wrong component)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp.xmlstream import StanzaBase

from bridge.core import ChatInfo, PortalKey, RemoteChatInfo
from bridge.core.federation import FederationPolicy
from bridge.portal.models import Portal
from bridge.xmpp.client import XmppClient
from bridge.xmpp.components import XmppClients
from bridge.xmpp.config import component_configs
from bridge.xmpp.ids import NETWORK, muc_key
from bridge.xmpp.invites import (
    HUB_JOINS,
    MAX_KEYS,
    PER_DOMAIN,
    PER_INVITER,
    PER_ROOM,
    Invitations,
    InviteLimits,
    RateLimit,
)
from bridge.xmpp.routing import ComponentRoutes
from tests.xmpp.test_components import agency_b, section
from tests.xmpp.test_inbound import FakeContext as InboundContext
from tests.xmpp.test_inbound import FakeMarks
from tests.xmpp.test_muc_extras import (
    ALICE,
    DOMAIN,
    ROOM,
    FakeContext,
    FakeRooms,
    direct_invite,
    make_cfg,
    make_component,
    message,
)

MALLORY = f"mallory\\3ahub.example@{DOMAIN}"


def setup() -> tuple[Invitations, Any, FakeContext, FakeRooms]:
    component = make_component([])
    ctx = FakeContext()
    rooms = FakeRooms()
    inv = Invitations(ctx, make_cfg(), component, rooms, InviteLimits(lambda: 0.0))  # type: ignore[arg-type]
    return inv, component, ctx, rooms


def mediated(component: Any, frm: str, claimed: str, to: str = ALICE) -> Any:
    inner = f"<x xmlns='http://jabber.org/protocol/muc#user'><invite from='{claimed}'/></x>"
    return message(component, inner, frm=frm, to=to, mtype="normal")


async def test_a_stranger_cannot_self_invite_into_a_room_someone_else_bridged() -> None:
    inv, component, ctx, rooms = setup()
    ctx.portals[ROOM] = Portal(network=NETWORK, remote_id=ROOM, mxid="!secret:hub.example")
    rooms.occupied[ROOM] = {"xena@xmpp.example"}  # Mallory's XMPP account is not in the room
    await inv.from_xmpp(direct_invite(component, "mallorysxmpp@xmpp.example/x", ROOM, to=MALLORY))
    await ctx.settle()
    assert ctx.queued == [] and rooms.joined == []
    # An occupant the room shows by real JID may invite.
    bob = f"bob\\3ahub.example@{DOMAIN}"
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/phone", ROOM, to=bob))
    await ctx.settle()
    [event] = ctx.queued
    assert isinstance(event, RemoteChatInfo) and event.info.matrix_users == ["@bob:hub.example"]


async def test_a_direct_invitation_to_a_new_room_from_outside_it_joins_and_leaves_again() -> None:
    inv, component, ctx, rooms = setup()
    await inv.from_xmpp(direct_invite(component, "stranger@xmpp.example/x", ROOM))
    await ctx.settle()
    assert rooms.joined == [ROOM] and rooms.left == [ROOM] and ctx.queued == []


async def test_invitations_into_the_bridges_own_rooms_are_never_followed() -> None:
    inv, component, ctx, rooms = setup()
    hosted = "lobby@rooms.xmpp.example"
    ctx.portals[hosted] = Portal(network=NETWORK, remote_id=hosted, mxid="!lobby:hub.example")
    rooms.occupied[hosted] = {"xena@xmpp.example"}
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", hosted, to=MALLORY))
    await inv.from_xmpp(mediated(component, hosted, "xena@xmpp.example", to=MALLORY))
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", f"x@{DOMAIN}"))
    await ctx.settle()
    assert ctx.queued == [] and rooms.joined == []


async def test_a_mediated_invitation_counts_only_from_the_rooms_bare_address() -> None:
    inv, component, ctx, rooms = setup()
    await inv.from_xmpp(mediated(component, f"{ROOM}/Mallory", "xena@xmpp.example"))
    await ctx.settle()
    assert ctx.queued == [] and rooms.joined == []
    await inv.from_xmpp(mediated(component, ROOM, "xena@xmpp.example"))  # the room vouches
    await ctx.settle()
    assert rooms.joined == [ROOM] and len(ctx.queued) == 1


async def test_limits_count_the_real_sender_not_the_inviter_it_claims() -> None:
    inv, component, ctx, rooms = setup()
    for n in range(PER_ROOM + 4):  # one room, a new forged inviter each time: the room's cap
        to = f"user{n}\\3ahub.example@{DOMAIN}"
        await inv.from_xmpp(mediated(component, ROOM, f"fake{n}@xmpp.example", to=to))
    await ctx.settle()
    assert len(ctx.queued) == PER_ROOM
    inv, component, ctx, rooms = setup()
    for n in range(PER_INVITER + 4):  # one claimed inviter: their own limit, not the room's
        to = f"user{n}\\3ahub.example@{DOMAIN}"
        await inv.from_xmpp(mediated(component, ROOM, "busy@xmpp.example", to=to))
    xena_invites = mediated(component, ROOM, "xena@xmpp.example", to=f"z\\3ahub.example@{DOMAIN}")
    await inv.from_xmpp(xena_invites)
    await ctx.settle()
    assert len(ctx.queued) == PER_INVITER + 1  # Xena's invitation still counts
    inv, component, ctx, rooms = setup()
    for n in range(PER_DOMAIN + 4):  # many rooms of one service: the domain's limit
        to = f"user{n}\\3ahub.example@{DOMAIN}"
        await inv.from_xmpp(mediated(component, f"r{n}@muc.xmpp.example", f"f{n}@x.example", to))
    await ctx.settle()
    assert len(rooms.joined) == PER_DOMAIN


async def test_invitation_joins_are_capped_for_the_whole_hub() -> None:
    inv, component, ctx, rooms = setup()
    ctx.federation = FederationPolicy(
        [{"network": "xmpp", "remote": ["*"], "matrix": ["*"]}], "hub.example"
    )  # every domain allowed
    for n in range(HUB_JOINS + 5):  # each from its own domain, each to its own user
        to = f"user{n}\\3ahub.example@{DOMAIN}"
        await inv.from_xmpp(mediated(component, f"r@muc{n}.example", "x@y.example", to=to))
    await ctx.settle()
    assert len(rooms.joined) == HUB_JOINS


def test_the_rate_limit_forgets_cheaply_and_stays_bounded() -> None:
    now = [0.0]
    limit = RateLimit(1, 10.0, lambda: now[0])
    for n in range(MAX_KEYS + 500):
        assert limit.allow(f"k{n}")
    assert len(limit) == MAX_KEYS
    now[0] = 11.0
    assert limit.allow("fresh") and len(limit) == 1  # the quiet ones are gone
    started = time.perf_counter()
    for n in range(20_000):  # no full scans: stays fast at the cap
        limit.allow(f"z{n}")
    assert time.perf_counter() - started < 2.0
    assert not limit.allow(f"z{19_999}")  # still counted


async def test_an_invitation_is_followed_by_the_component_that_serves_the_room() -> None:
    configs = component_configs(section(agency_b()) | {"rooms_domain": ""})
    routes = ComponentRoutes(configs)
    ctx = InboundContext([])
    tasks: list[asyncio.Future[Any]] = []
    ctx.background = lambda coro, name: tasks.append(asyncio.ensure_future(coro))  # type: ignore[attr-defined]

    async def no_portal(_: str) -> None:
        return None

    ctx.store.get_portal = no_portal  # type: ignore[attr-defined]
    a, b = (XmppClient(ctx, cfg, FakeMarks(), routes.jid_for) for cfg in configs[:2])  # type: ignore[arg-type]
    hub = XmppClients(ctx, routes, [a, b])  # type: ignore[arg-type]
    sent: list[StanzaBase] = []
    for client in (a, b):
        client.component.up = True
        client.component.xmpp.send = lambda s, *_, **__: sent.append(s)  # type: ignore[method-assign]
    joined: list[tuple[str, str]] = []

    def joiner(name: str) -> Any:
        async def bridge_room(room: str, mxid: str) -> tuple[PortalKey, ChatInfo]:
            joined.append((name, room))
            return muc_key(room), ChatInfo(name="team")

        return bridge_room

    a.bridge_room, b.bridge_room = joiner("a"), joiner("b")  # type: ignore[method-assign]
    b.mucs.room("team@muc.b.test").occupants["Eve"] = "eve@a.test"

    async def invite(room: str) -> None:
        raw = (f"<message xmlns='jabber:component:accept' from='eve@a.test/x' "
               f"to='alice\\3ahub.example@matrix.a.test' type='normal' id='i'>"
               f"<x xmlns='jabber:x:conference' jid='{room}'/></message>")  # fmt: skip
        await a._on_stanza(a.component.xmpp._build_stanza(ET.fromstring(raw)))
        await asyncio.gather(*tasks)

    await invite("team@muc.b.test")
    assert joined == [("b", "team@muc.b.test")]
    for owned in ("x@rooms.b.test", "x@matrix.b.test", "x@matrix.a.test"):
        await invite(owned)  # another component's rooms or users: never joined
    assert joined == [("b", "team@muc.b.test")]
    assert a.invitations.limits is b.invitations.limits and hub.owns("rooms.b.test")


async def test_a_mediated_invitation_with_a_direct_one_inside_is_the_rooms() -> None:
    """Prosody adds a XEP-0249 element to the invitations it mediates."""
    inv, component, ctx, rooms = setup()
    rooms.present = set()  # a room that shows nobody's address
    inner = (
        "<x xmlns='http://jabber.org/protocol/muc#user'><invite from='xena@xmpp.example'/></x>"
        f"<x xmlns='jabber:x:conference' jid='{ROOM}'/>"
    )
    await inv.from_xmpp(message(component, inner, frm=ROOM, to=ALICE, mtype="normal"))
    await ctx.settle()
    assert rooms.joined == [ROOM] and len(ctx.queued) == 1
