"""XMPP avatars removed, and XEP-0084 pictures fetched, without a server: hostile cases first.

XEP-0153's empty ``<photo/>`` and XEP-0084's ``<metadata/>`` without ``<info/>`` clear the
ghost's avatar, once; no ``<photo/>`` at all says nothing. The real thing (Prosody, ejabberd,
Synapse) is tests/e2e/test_xmpp_pep_avatars.py.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp import JID, ComponentXMPP, Message

from bridge.core import RemoteUserID
from bridge.portal.models import Ghost
from bridge.xmpp.avatars import (
    DATA_NS,
    MAX_AVATAR_BYTES,
    PUBSUB_NS,
    avatar_key,
)
from bridge.xmpp.ids import NETWORK, dm_key
from bridge.xmpp.muc import MucTracker
from tests.xmpp.test_avatars import (
    ALICE,
    GIF,
    PNG,
    ROMEO,
    ROOM,
    FakeContext,
    _occupant,
    _presence,
    see,
    setup,  # noqa: F401 (fixture)
)

ALICE_MXID = "@alice:hub.example"
MALLORY = "mallory@evil.example"


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def ghosts(ctx: FakeContext, **avatars: str | None) -> dict[str, Ghost]:
    """Give the fake store ghosts: remote id → avatar mxc (None: a ghost without one)."""
    known = {
        user: Ghost(
            network=NETWORK,
            remote_id=RemoteUserID(user),
            mxid=f"@xmpp_{len(user)}:hub.example",
            avatar_mxc=mxc,
        )
        for user, mxc in avatars.items()
    }

    async def get_ghost(remote_id: str) -> Ghost | None:
        return known.get(remote_id)

    ctx.store.get_ghost = get_ghost  # type: ignore[attr-defined]
    return known


def notification(xmpp: ComponentXMPP, pfrom: str, *infos: dict[str, str]) -> Message:
    """A XEP-0084 metadata notification as the contact's server pushes it."""
    metadata = "".join(
        "<info " + " ".join(f"{k}='{v}'" for k, v in info.items()) + "/>" for info in infos
    )
    xml = (f"<message xmlns='jabber:component:accept' from='{pfrom}' to='{ALICE}'>"
           "<event xmlns='http://jabber.org/protocol/pubsub#event'>"
           "<items node='urn:xmpp:avatar:metadata'><item id='current'>"
           f"<metadata xmlns='urn:xmpp:avatar:metadata'>{metadata}</metadata>"
           "</item></items></event></message>")  # fmt: skip
    return Message(stream=xmpp, xml=ET.fromstring(xml))


def removals(ctx: FakeContext) -> list[str]:
    return [e.sender for e in ctx.queued if e.sender_info.avatar_removed]


# --- hostile first -------------------------------------------------------------------------------


async def test_a_stranger_cannot_remove_or_change_someone_elses_avatar(setup: Any) -> None:  # noqa: F811
    avatars, xmpp, ctx, cards, asked = setup
    ctx.store.portals.add((ROMEO, ALICE_MXID))
    ghosts(ctx, **{ROMEO: "mxc://hub.example/romeo"})
    # Mallory's server stamps her JID on what she sends: however it is dressed up as Romeo's,
    # it is about Mallory, who has no DM with Alice, so nothing is fetched or changed.
    forged = notification(xmpp, f"{MALLORY}/x")
    forged.xml.find(".//{http://jabber.org/protocol/pubsub#event}item").set("publisher", ROMEO)
    assert avatars.on_message(forged)
    see(avatars, _presence(xmpp, f"{MALLORY}/x", ALICE, ""))
    cards[MALLORY] = PNG
    see(avatars, _presence(xmpp, f"{MALLORY}/x", ALICE, sha1(PNG)))
    # An occupant of a room on another server claims to be Romeo: room-local, so Romeo's
    # ghost is not touched.
    mucs: MucTracker = avatars._mucs
    hostile = "den@muc.evil.example"
    ctx.store.portals.add((hostile, ""))
    mucs.room(hostile)
    claim = _occupant(xmpp, "Romeo", "", real=f"{ROMEO}/r", room=hostile)
    mucs.on_presence(claim)
    see(avatars, claim)
    await ctx.settle()
    assert ctx.queued == [] and asked == []
    assert avatar_key(ROMEO) not in ctx.store.kv and avatar_key(MALLORY) not in ctx.store.kv


async def test_oversize_and_non_image_pep_avatars_are_refused(setup: Any) -> None:  # noqa: F811
    avatars, xmpp, ctx, _, _ = setup
    ctx.store.portals.add((ROMEO, ALICE_MXID))
    served: list[str] = []

    class Answer:
        def __init__(self, payload: str) -> None:
            self.xml = ET.fromstring(
                f"<iq xmlns='jabber:component:accept' type='result'><pubsub xmlns='{PUBSUB_NS}'>"
                f"<items node='{DATA_NS}'><item id='x'><data xmlns='{DATA_NS}'>{payload}</data>"
                "</item></items></pubsub></iq>"
            )

    class Asked:
        def __init__(self, payload: str) -> None:
            self.xml = ET.Element("iq")
            self.payload = payload

        async def send(self, timeout: int) -> Answer:
            served.append(self.payload[:8])
            return Answer(self.payload)

    huge = base64.b64encode(PNG + b"\x00" * MAX_AVATAR_BYTES).decode()
    script = base64.b64encode(b"<svg onload=alert(1)>").decode()
    for payload in (huge, script):
        avatars._xmpp = type("X", (), {"make_iq_get": lambda *_, p=payload, **__: Asked(p)})()
        digest = sha1(base64.b64decode(payload))
        assert avatars.on_message(notification(xmpp, ROMEO, {"id": digest, "bytes": "9"}))
        await ctx.settle()
        # Refused, and that hash not asked for again.
        assert avatars.on_message(notification(xmpp, ROMEO, {"id": digest, "bytes": "9"}))
        await ctx.settle()
    assert len(served) == 2 and ctx.queued == []


# --- removal -------------------------------------------------------------------------------------


async def test_an_empty_photo_clears_the_ghosts_avatar_once(setup: Any) -> None:  # noqa: F811
    avatars, xmpp, ctx, cards, _ = setup
    ctx.store.portals.add((ROMEO, ALICE_MXID))
    ghosts(ctx, **{ROMEO: "mxc://hub.example/romeo"})
    # No <x/>, or <x/> without <photo/>: "not known", the ghost keeps its avatar.
    see(avatars, xmpp.make_presence(pfrom=JID(f"{ROMEO}/phone"), pto=JID(ALICE)))
    see(avatars, _presence(xmpp, f"{ROMEO}/phone", ALICE, None))
    await ctx.settle()
    assert ctx.queued == []
    for _ in range(3):  # every client repeats it in every presence
        see(avatars, _presence(xmpp, f"{ROMEO}/phone", ALICE, ""))
        await ctx.settle()
    [event] = ctx.queued
    assert event.portal == dm_key(ROMEO, ALICE_MXID) and event.sender == ROMEO
    assert event.sender_info.avatar is None and event.sender_info.avatar_removed
    assert not event.create_portal and ctx.store.kv[avatar_key(ROMEO)] == ""
    # A new picture afterwards is fetched and set again.
    cards[ROMEO] = GIF
    see(avatars, _presence(xmpp, f"{ROMEO}/phone", ALICE, sha1(GIF)))
    await ctx.settle()
    assert ctx.queued[-1].sender_info.avatar.data == GIF and len(ctx.queued) == 2


async def test_empty_pep_metadata_clears_the_ghosts_avatar_once(setup: Any) -> None:  # noqa: F811
    avatars, xmpp, ctx, _, _ = setup
    ctx.store.portals.add((ROMEO, ALICE_MXID))
    ghosts(ctx, **{ROMEO: None})  # shows no avatar (yet, as far as the store says)
    ctx.store.kv[avatar_key(ROMEO)] = sha1(PNG)  # but one was handed to the core
    for _ in range(2):
        assert avatars.on_message(notification(xmpp, ROMEO))
        await ctx.settle()
    assert removals(ctx) == [ROMEO] and ctx.store.kv[avatar_key(ROMEO)] == ""


async def test_no_ghost_is_made_or_changed_for_people_without_avatars(setup: Any) -> None:  # noqa: F811
    avatars, xmpp, ctx, _, _ = setup
    mucs: MucTracker = avatars._mucs
    ctx.store.portals.add((ROOM, ""))
    ctx.store.portals.add((ROMEO, ALICE_MXID))
    ghosts(ctx, **{ROMEO: None})
    mucs.room(ROOM)
    for nick in ("Lurker1", "Lurker2"):  # occupants who never spoke: no ghost yet
        lurker = _occupant(xmpp, nick, "")
        mucs.on_presence(lurker)
        see(avatars, lurker)
    see(avatars, _presence(xmpp, ROMEO, ALICE, ""))  # a ghost that has no avatar
    await ctx.settle()
    assert ctx.queued == []
    assert ctx.store.kv == {avatar_key(ROMEO): ""}  # not looked up again
    assert avatars._local == {}


async def test_a_room_occupants_removed_avatar_clears_their_ghost(setup: Any) -> None:  # noqa: F811
    avatars, xmpp, ctx, cards, _ = setup
    mucs: MucTracker = avatars._mucs
    ctx.store.portals.add((ROOM, ""))
    mucs.room(ROOM)
    cards[f"{ROOM}/Juliet"] = PNG
    joined = _occupant(xmpp, "Juliet", sha1(PNG))
    mucs.on_presence(joined)
    see(avatars, joined)
    await ctx.settle()
    ghosts(ctx, **{f"{ROOM}/Juliet": "mxc://hub.example/juliet"})
    for _ in range(2):
        see(avatars, _occupant(xmpp, "Juliet", ""))
        await ctx.settle()
    assert removals(ctx) == [f"{ROOM}/Juliet"] and len(ctx.queued) == 2
