"""Regressions from the second hostile review of the XMPP connector: each test was first written
to pass while its bug existed (forged or stale input winning), then turned to assert the fix."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from slixmpp import Presence
from slixmpp.xmlstream import StanzaBase

from bridge.xmpp.invites import JOINS_PER_SENDER, PER_INVITEE, Invitations, InviteLimits
from bridge.xmpp.muc import MucTracker
from bridge.xmpp.private import IDENTITY_DAYS, identity_key
from bridge.xmpp.store import ArchiveMark
from tests.xmpp.test_avatars import ALICE as AV_ALICE
from tests.xmpp.test_avatars import LISTENER as AV_LISTENER
from tests.xmpp.test_avatars import MUC_USER_NS, PNG, ROMEO, _presence, see, sha1
from tests.xmpp.test_avatars import ROOM as AV_ROOM
from tests.xmpp.test_avatars import setup as av_setup  # noqa: F401 (fixture)
from tests.xmpp.test_inbound import ROOM as MAM_ROOM
from tests.xmpp.test_inbound import FakeMarks
from tests.xmpp.test_mam import ME, ScriptedClient
from tests.xmpp.test_muc_extras import (
    ALICE_MXID,
    ALICE_OCCUPANT,
    DOMAIN,
    ROOM,
    FakeContext,
    FakeRooms,
    bridged,  # noqa: F401 (fixture)
    direct_invite,
    make_cfg,
    make_component,
    message,
    occupant_presence,
)
from tests.xmpp.test_private_safety import joined, pm_portal

BODY = "<body>hi</body>"
COMPOSING = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"


def _holds_xena(mucs: MucTracker, component: Any, real: str = "") -> None:
    """Whoever held the nick Xena leaves, and ``real`` (or someone unseen) takes it."""
    mucs.on_presence(occupant_presence(component, "Xena", ALICE_OCCUPANT, gone=True))
    mucs.on_presence(occupant_presence(component, "Xena", ALICE_OCCUPANT, real=real))


# --- 1/2: who a private conversation is with -------------------------------------------------


async def test_a_bare_chat_state_records_nobody(bridged: Any) -> None:  # noqa: F811
    private, component, ctx, mucs, _ = bridged
    _holds_xena(mucs, component, "mallory@xmpp.example/m")
    await private.from_bridged(message(component, COMPOSING, frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT))
    assert not [k for k in ctx.kv if k.startswith("pm:")]
    _holds_xena(mucs, component, "xena@xmpp.example/a")  # the real Xena is back and writes
    await private.from_bridged(message(component, BODY, frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT))
    assert len(ctx.accepted) == 1
    record = json.loads(ctx.kv[identity_key(f"{ROOM}/Xena", ALICE_MXID)])
    assert record["jid"] == "xena@xmpp.example"


async def test_a_record_expires(bridged: Any) -> None:  # noqa: F811
    private, component, ctx, mucs, _ = bridged
    now = [1000.0]
    private._clock = lambda: now[0]
    await private.from_bridged(message(component, BODY, frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT))
    _holds_xena(mucs, component, "yann@xmpp.example/y")
    await private.from_bridged(message(component, BODY, frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT))
    assert len(ctx.accepted) == 1  # someone else under the nick: dropped
    now[0] += IDENTITY_DAYS * 86400 + 1
    await private.from_bridged(message(component, BODY, frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT))
    assert len(ctx.accepted) == 2  # long over: a new conversation


async def test_an_unknown_holder_does_not_pass_a_recorded_identity(bridged: Any) -> None:  # noqa: F811
    private, component, ctx, mucs, _ = bridged
    joined(ctx)
    await private.from_bridged(message(component, BODY, frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT))
    assert len(ctx.accepted) == 1
    _holds_xena(mucs, component)  # someone, the room hides their JID now
    try:
        await private.route(pm_portal(ROOM, "Xena"), ALICE_MXID, "Alice")
    except Exception as err:
        assert "someone else" in str(getattr(err, "user_message", ""))
    else:
        raise AssertionError("an answer went to whoever holds the nick now")
    await private.from_bridged(message(component, BODY, frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT))
    assert len(ctx.accepted) == 1


async def test_jid_or_occupant_id_recognise_the_person(bridged: Any) -> None:  # noqa: F811
    private, component, ctx, mucs, _ = bridged
    ctx.kv[identity_key(f"{ROOM}/Xena", ALICE_MXID)] = json.dumps(
        {"jid": "xena@xmpp.example", "oid": "occ-x", "at": 10**12}
    )
    private._clock = lambda: 10**12 + 60
    _holds_xena(mucs, component)  # JID hidden now, but the room gives the same occupant-id
    private._moderation.occupant_ids = lambda _room: {"Xena": "occ-x"}
    await private.from_bridged(message(component, BODY, frm=f"{ROOM}/Xena", to=ALICE_OCCUPANT))
    assert len(ctx.accepted) == 1


# --- 3: invitations ----------------------------------------------------------------------------


def _invitations() -> tuple[Invitations, Any, FakeContext, FakeRooms]:
    component = make_component([])
    ctx, rooms = FakeContext(), FakeRooms()
    return (
        Invitations(ctx, make_cfg(), component, rooms, InviteLimits(lambda: 0.0)),
        component,
        ctx,
        rooms,
    )


async def test_a_forged_direct_invitation_does_not_block_the_real_one() -> None:
    inv, component, ctx, rooms = _invitations()
    await inv.from_xmpp(direct_invite(component, "mallory@xmpp.example/x", ROOM))  # not there
    await ctx.settle()
    assert ctx.queued == [] and rooms.left == [ROOM]
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", ROOM))
    await ctx.settle()
    assert len(ctx.queued) == 1


async def test_forged_invitations_neither_use_up_the_invitee_nor_the_hub() -> None:
    inv, component, ctx, rooms = _invitations()
    for n in range(PER_INVITEE + 5):  # strangers who are in none of the rooms they name
        await inv.from_xmpp(
            direct_invite(component, f"m{n % 3}@xmpp.example/x", f"r{n}@muc.xmpp.example")
        )
    await ctx.settle()
    assert ctx.queued == []
    assert len(rooms.joined) == 3 * JOINS_PER_SENDER  # each stranger makes the bridge join few
    await inv.from_xmpp(direct_invite(component, "xena@xmpp.example/a", ROOM))
    await ctx.settle()
    assert len(ctx.queued) == 1


# --- 6: stale occupants ------------------------------------------------------------------------


def test_occupants_are_forgotten_when_we_leave_or_rejoin() -> None:
    component = make_component([])
    mucs = MucTracker()
    mucs.room(ROOM)
    listener = f"bridge@{DOMAIN}/pontis"
    mucs.on_presence(occupant_presence(component, "Mal", listener, real="mallory@xmpp.example/a"))
    mucs.on_presence(occupant_presence(component, "Bridge", listener, own=True))
    mucs.on_presence(occupant_presence(component, "Bridge", listener, own=True, gone=True))
    assert mucs.rooms[ROOM].occupants == {}  # nobody of ours sees the room
    mucs.on_presence(occupant_presence(component, "Mal", listener, real="mallory@xmpp.example/a"))
    mucs.forget_all()  # the stream dropped
    assert mucs.rooms[ROOM].occupants == {}
    mucs.on_presence(occupant_presence(component, "Mal", listener, real="mallory@xmpp.example/a"))

    async def rejoin() -> None:
        mucs.expect_join(ROOM, listener)  # before the room lists everyone again

    asyncio.run(rejoin())
    mucs.on_presence(occupant_presence(component, "Xena", listener, real="xena@xmpp.example/a"))
    mucs.on_presence(occupant_presence(component, "Bridge", listener, own=True))
    assert set(mucs.rooms[ROOM].occupants) == {"Xena", "Bridge"}


# --- 9: a rejoin sharing a join already under way ----------------------------------------------


async def test_a_shared_join_without_history_does_not_move_the_mark() -> None:
    marks = FakeMarks()
    marks.marks[MAM_ROOM] = ArchiveMark("s7", 0)
    scripted = ScriptedClient(marks, archived=False)
    client = scripted.client
    held: list[StanzaBase] = []

    def send(stanza: StanzaBase, *_: Any, **__: Any) -> None:
        if isinstance(stanza, Presence):
            held.append(stanza)  # the room answers the join later
        else:
            asyncio.get_running_loop().call_soon(scripted._answer, stanza)

    client.component.xmpp.send = send  # type: ignore[method-assign]
    released: list[bool] = []
    real_release = client.inbound.release

    async def release(room: str, *, caught_up: bool = True) -> None:
        released.append(caught_up)
        await real_release(room, caught_up=caught_up)

    client.inbound.release = release  # type: ignore[method-assign]
    plain = asyncio.create_task(client.joins.join(MAM_ROOM, client._cfg.listener_jid, "bridge"))
    await asyncio.sleep(0)
    rejoin = asyncio.create_task(client.joins.join_listener(MAM_ROOM))
    for _ in range(20):
        await asyncio.sleep(0.01)
    [join] = held  # one join sent, without the history the rejoin wanted
    scripted._answer(join)
    assert await asyncio.wait_for(rejoin, 5) == ME
    await plain
    assert released == [False]
    assert MAM_ROOM in client.inbound._behind  # the mark stays for the next catch-up


# --- 7: stopping while connecting ---------------------------------------------------------------


async def test_stop_while_the_server_is_away_ends_the_connection_attempts() -> None:
    import logging
    from dataclasses import replace

    from bridge.xmpp.component import Component

    async def nothing(*_: Any) -> None: ...

    cfg = replace(make_cfg(), port=1)  # refused: slixmpp keeps trying
    component = Component("x.example", cfg, logging.getLogger("t"), on_stanza=nothing,
                          on_state=nothing)  # fmt: skip
    attempts: list[object] = []
    component.xmpp.add_event_handler("connection_failed", attempts.append)
    component.start()
    await asyncio.sleep(0.5)
    await component.stop()
    before = len(attempts)
    await asyncio.sleep(6.5)  # longer than slixmpp's longest wait between attempts
    assert len(attempts) == before


async def test_a_restart_cancelled_mid_start_stops_what_it_started() -> None:
    from bridge.xmpp.components import XmppClients
    from bridge.xmpp.config import component_configs
    from bridge.xmpp.routing import ComponentRoutes
    from tests.xmpp.test_component_restart import Context
    from tests.xmpp.test_components import section

    class Slow:
        """A component client whose start takes a while (the hosted rooms' store read)."""

        def __init__(self) -> None:
            self.starts, self.started, self.stops = 0, 0, 0
            self.report_state: Any = None
            self.invitations = type("I", (), {})()

        async def connect(self) -> None:
            self.starts += 1
            if self.starts == 1:
                raise OSError("database unreachable")
            await asyncio.sleep(0.2)
            self.started += 1

        async def disconnect(self) -> None:
            self.stops += 1

    ctx = Context()
    slow = Slow()
    hub = XmppClients(ctx, ComponentRoutes(component_configs(section())), [slow])  # type: ignore[arg-type]
    import bridge.xmpp.components as components

    first, components.RETRY_FIRST = components.RETRY_FIRST, 0.01
    try:
        await hub.connect()
        await asyncio.sleep(0.1)  # the restart is mid-start now
        assert slow.starts == 2
        await hub.disconnect()
        hub._start_failed(0, OSError("late"), 0)  # a failure reported after the stop
        await asyncio.sleep(0.3)
    finally:
        components.RETRY_FIRST = first
    assert slow.started == 0 and slow.stops == 1 and slow.starts == 2


# --- 4/5: avatars ------------------------------------------------------------------------------


async def test_flipping_hashes_fetch_a_few_times_and_set_nothing(av_setup: Any) -> None:  # noqa: F811
    from bridge.xmpp.avatars import FETCHES_PER_USER

    avatars, xmpp, ctx, cards, asked = av_setup
    ctx.store.portals.add((ROMEO, "@alice:hub.example"))
    cards[ROMEO] = PNG  # its hash is neither of those announced
    for n in range(20):
        see(avatars, _presence(xmpp, f"{ROMEO}/phone", AV_ALICE, ("a" if n % 2 else "b") * 40))
        await ctx.settle()
    assert len(asked) <= FETCHES_PER_USER
    assert ctx.queued == []  # a picture that is not what was announced is not shown


async def test_the_announced_hash_must_be_the_pictures(av_setup: Any) -> None:  # noqa: F811
    avatars, xmpp, ctx, cards, asked = av_setup
    ctx.store.portals.add((ROMEO, "@alice:hub.example"))
    cards[ROMEO] = PNG
    see(avatars, _presence(xmpp, f"{ROMEO}/phone", AV_ALICE, "e" * 40))
    await ctx.settle()
    see(avatars, _presence(xmpp, f"{ROMEO}/laptop", AV_ALICE, "e" * 40))  # the same lie again
    await ctx.settle()
    assert len(asked) == 1 and ctx.queued == []
    see(avatars, _presence(xmpp, f"{ROMEO}/phone", AV_ALICE, sha1(PNG)))
    await ctx.settle()
    assert len(ctx.queued) == 1  # the true hash is taken


def _occupant(xmpp: Any, nick: str, real: str = "") -> Any:
    import xml.etree.ElementTree as ET

    presence = _presence(xmpp, f"{AV_ROOM}/{nick}", AV_LISTENER, "d" * 40)
    x = ET.SubElement(presence.xml, f"{{{MUC_USER_NS}}}x")
    item = ET.SubElement(x, f"{{{MUC_USER_NS}}}item", affiliation="none", role="participant")
    if real:
        item.set("jid", real)
    return presence


async def test_a_room_claiming_third_parties_jids_reaches_nobody_else(av_setup: Any) -> None:  # noqa: F811
    avatars, xmpp, ctx, _, asked = av_setup
    avatars._mucs.room(AV_ROOM)
    ctx.store.portals.add((AV_ROOM, ""))
    for n in range(3):
        p = _occupant(xmpp, f"n{n}", f"victim{n}@elsewhere.example/r")
        avatars._mucs.on_presence(p)
        origin = avatars.origin(p)
        assert origin is not None and "/" in origin.user  # room-local, not victim's ghost
        see(avatars, p)
    await ctx.settle()
    assert not [jid for jid in asked if "elsewhere.example" in jid]
    assert all(jid.startswith(f"{AV_ROOM}/") for jid in asked)  # asked through the room
    own = _occupant(xmpp, "Romeo", f"{ROMEO}/balcony")  # the room's own server: vouched
    avatars._mucs.on_presence(own)
    vouched = avatars.origin(own)
    assert vouched is not None and vouched.user == ROMEO


async def test_nick_cycling_leaves_the_store_alone(av_setup: Any) -> None:  # noqa: F811
    from bridge.xmpp.avatars import FETCHES_PER_PORTAL

    avatars, xmpp, ctx, _, asked = av_setup
    avatars._mucs.room(AV_ROOM)
    ctx.store.portals.add((AV_ROOM, ""))
    for n in range(50):
        p = _occupant(xmpp, f"nick{n}")
        avatars._mucs.on_presence(p)
        see(avatars, p)
    await ctx.settle()
    assert not [k for k in ctx.store.kv if k.startswith("avatar:")]
    assert len(asked) == FETCHES_PER_PORTAL


# --- 8: presence from strangers ----------------------------------------------------------------


async def test_presence_of_strangers_and_client_floods_is_bounded() -> None:
    from bridge.xmpp.avatars import Origin
    from bridge.xmpp.ids import dm_key
    from bridge.xmpp.presence import MAX_RESOURCES, RemotePresence
    from tests.xmpp.test_presence import DM
    from tests.xmpp.test_presence import FakeContext as PresenceContext
    from tests.xmpp.test_presence import _presence as contact_presence

    ctx = PresenceContext()
    presence = RemotePresence(ctx)  # type: ignore[arg-type]
    stranger = Origin(dm_key("eve@xmpp.example", "@alice:hub.example"), "eve@xmpp.example",  # type: ignore[arg-type]
                      "eve@xmpp.example", DOMAIN)  # fmt: skip
    presence.on_presence(contact_presence("eve@xmpp.example/x"), stranger)  # no DM with Alice
    far = Origin(dm_key("eve@far.example", "@alice:hub.example"), "eve@far.example",  # type: ignore[arg-type]
                 "eve@far.example", DOMAIN)  # fmt: skip
    ctx.portals.add((far.key.remote_id, "@alice:hub.example"))
    presence.on_presence(contact_presence("eve@far.example/x"), far)  # a domain not let in
    await ctx.settle()
    assert ctx.ghosts == [] and not presence._resources
    for n in range(MAX_RESOURCES + 20):
        presence.on_presence(contact_presence(f"romeo@xmpp.example/r{n}"), DM)
    await ctx.settle()
    assert len(presence._resources["romeo@xmpp.example"]) == MAX_RESOURCES
