"""XMPP avatars → ghosts without a server: hashes, vCard photos and hostile input.

The real thing (Prosody and ejabberd, Synapse) is tests/e2e/test_xmpp_avatars.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, ComponentXMPP, Presence
from slixmpp.exceptions import IqTimeout

from bridge.core import RemoteChatInfo
from bridge.core.federation import FederationPolicy
from bridge.core.ghost_names import GhostNames
from bridge.core.ids import NetworkID
from bridge.xmpp.avatars import (
    MAX_AVATAR_BYTES,
    AvatarRefused,
    RemoteAvatars,
    avatar_key,
    decode_photo,
    image_type,
    metadata_hash,
    photo_hash,
)
from bridge.xmpp.ids import dm_key, muc_key
from bridge.xmpp.moderation import MucModeration
from bridge.xmpp.muc import MUC_USER_NS, MucTracker
from bridge.xmpp.vcards import read_vcard

DOMAIN = "matrix.xmpp.example"
ALICE = "alice\\3ahub.example@" + DOMAIN
LISTENER = f"bridge@{DOMAIN}/pontis"
ROMEO = "romeo@xmpp.example"
ROOM = "team@muc.xmpp.example"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
GIF = b"GIF89a" + b"\x00" * 16


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class FakeStore:
    def __init__(self) -> None:
        self.kv: dict[str, str] = {}
        self.portals: set[tuple[str, str]] = set()

    async def kv_get(self, key: str) -> str | None:
        return self.kv.get(key)

    async def kv_set(self, key: str, value: str) -> None:
        self.kv[key] = value

    async def get_portal(self, remote_id: str, receiver: str = "") -> object | None:
        return object() if (remote_id, receiver) in self.portals else None


class FakeContext:
    log = logging.getLogger("test.avatars")
    bot_mxid = "@pontis:hub.example"

    def __init__(self) -> None:
        self.store = FakeStore()
        self.queued: list[Any] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.federation = FederationPolicy(
            [{"network": "xmpp", "remote": ["xmpp.example", "*.xmpp.example"], "matrix": ["*"]}],
            "hub.example",
        )

    def parse_ghost_mxid(self, mxid: str) -> str | None:
        return GhostNames("hub.example").parse(NetworkID("xmpp"), mxid)

    def background(self, coro: Any, *, name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def queue_remote_event(self, event: Any) -> None:
        self.queued.append(event)

    async def settle(self) -> None:
        await asyncio.gather(*self.tasks)


def see(avatars: RemoteAvatars, presence: Presence) -> None:
    """What the client does with each presence."""
    avatars.on_presence(presence, avatars.origin(presence))


def _presence(xmpp: ComponentXMPP, pfrom: str, pto: str, photo: str | None) -> Presence:
    presence = xmpp.make_presence(pfrom=JID(pfrom), pto=JID(pto))
    x = ET.SubElement(presence.xml, "{vcard-temp:x:update}x")
    if photo is not None:
        ET.SubElement(x, "{vcard-temp:x:update}photo").text = photo
    return presence


def _card(binval: str, mimetype: str = "image/png") -> ET.Element:
    card = ET.Element("{vcard-temp}vCard")
    ET.SubElement(card, "{vcard-temp}FN").text = "Romeo"
    photo = ET.SubElement(card, "{vcard-temp}PHOTO")
    ET.SubElement(photo, "{vcard-temp}TYPE").text = mimetype
    ET.SubElement(photo, "{vcard-temp}BINVAL").text = binval
    return card


@pytest.fixture
def setup() -> tuple[RemoteAvatars, ComponentXMPP, FakeContext, dict[str, bytes], list[str]]:
    xmpp = ComponentXMPP(DOMAIN, "s", "127.0.0.1", 5347)
    ctx = FakeContext()
    mucs = MucTracker()
    moderation = MucModeration(ctx, LISTENER, lambda jid: None, mucs)  # type: ignore[arg-type]
    avatars = RemoteAvatars(ctx, xmpp, DOMAIN, LISTENER, mucs, moderation)  # type: ignore[arg-type]
    cards: dict[str, bytes] = {}
    asked: list[str] = []

    async def vcard_data(jid: str, asker: str = "") -> bytes | None:  # as the network would
        asked.append(jid)
        return cards.get(jid)

    avatars._vcard_data = vcard_data  # type: ignore[method-assign]
    return avatars, xmpp, ctx, cards, asked


# --- parsing -------------------------------------------------------------------------------------


def test_photo_hash_reads_xep_0153(setup: Any) -> None:
    _, xmpp, _, _, _ = setup
    digest = sha1(PNG)
    assert photo_hash(_presence(xmpp, ROMEO, ALICE, digest.upper())) == digest
    assert photo_hash(_presence(xmpp, ROMEO, ALICE, "")) == ""  # no avatar
    assert photo_hash(_presence(xmpp, ROMEO, ALICE, None)) is None  # not ready
    assert photo_hash(_presence(xmpp, ROMEO, ALICE, "../../etc/passwd")) is None
    assert photo_hash(xmpp.make_presence(pfrom=JID(ROMEO))) is None


def test_metadata_hash_reads_xep_0084() -> None:
    def notification(*infos: dict[str, str]) -> Any:
        xml = (
            "<message xmlns='jabber:component:accept' from='romeo@xmpp.example' to='x@y'>"
            "<event xmlns='http://jabber.org/protocol/pubsub#event'>"
            "<items node='urn:xmpp:avatar:metadata'><item id='1'>"
            "<metadata xmlns='urn:xmpp:avatar:metadata'>"
            + "".join("<info " + " ".join(f"{k}='{v}'" for k, v in i.items()) + "/>" for i in infos)
            + "</metadata></item></items></event></message>"
        )

        class Stanza:
            pass

        stanza = Stanza()
        stanza.xml = ET.fromstring(xml)  # type: ignore[attr-defined]
        return stanza

    digest = sha1(PNG)
    assert metadata_hash(notification({"id": digest, "type": "image/png", "bytes": "40"})) == digest
    # Only a picture in the data node counts; one on the web is not fetched.
    assert metadata_hash(notification({"id": digest, "url": "http://10.0.0.1/a.png"})) is None
    assert metadata_hash(notification()) == ""  # the avatar was removed


def test_only_images_of_at_most_a_mebibyte() -> None:
    assert image_type(PNG) == "image/png"
    assert image_type(GIF) == "image/gif"
    assert image_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert decode_photo(base64.b64encode(PNG).decode()) == PNG
    with pytest.raises(AvatarRefused, match="not a PNG"):
        decode_photo(base64.b64encode(b"<svg onload=alert(1)>").decode())
    with pytest.raises(AvatarRefused, match="not base64"):
        decode_photo("iVBOR%%%not base64")
    huge = base64.b64encode(PNG + b"\x00" * MAX_AVATAR_BYTES).decode()
    with pytest.raises(AvatarRefused, match="larger"):
        decode_photo(huge)


def test_a_vcard_with_a_bad_photo_keeps_its_name() -> None:
    good = read_vcard(_card(base64.b64encode(PNG).decode(), "image/svg+xml"))
    assert good.avatar is not None and good.avatar.mimetype == "image/png"  # sniffed, not claimed
    assert good.avatar.avatar_id == sha1(PNG)
    for binval in ("%%%", base64.b64encode(b"MZ\x90\x00 an exe").decode()):
        info = read_vcard(_card(binval))
        assert info.name == "Romeo" and info.avatar is None


# --- presence → ghost ----------------------------------------------------------------------------


async def test_a_contacts_new_avatar_reaches_the_ghost_once(setup: Any) -> None:
    avatars, xmpp, ctx, cards, asked = setup
    ctx.store.portals.add((ROMEO, "@alice:hub.example"))
    cards[ROMEO] = PNG
    for _ in range(3):  # a burst of the same presence fetches once
        see(avatars, _presence(xmpp, f"{ROMEO}/phone", ALICE, sha1(PNG)))
    await ctx.settle()
    see(avatars, _presence(xmpp, f"{ROMEO}/laptop", ALICE, sha1(PNG)))
    await ctx.settle()
    assert asked == [ROMEO]
    [event] = ctx.queued
    assert isinstance(event, RemoteChatInfo) and not event.create_portal
    assert event.portal == dm_key(ROMEO, "@alice:hub.example") and event.sender == ROMEO
    assert event.sender_info.avatar.data == PNG
    assert event.sender_info.avatar.avatar_id == sha1(PNG)
    assert ctx.store.kv[avatar_key(ROMEO)] == sha1(PNG)

    cards[ROMEO] = GIF  # a new picture, a new hash
    see(avatars, _presence(xmpp, f"{ROMEO}/phone", ALICE, sha1(GIF)))
    await ctx.settle()
    assert ctx.queued[-1].sender_info.avatar.data == GIF and len(ctx.queued) == 2


async def test_strangers_and_bad_pictures_reach_no_ghost(setup: Any) -> None:
    avatars, xmpp, ctx, _, asked = setup
    # No DM with Alice: the bridge fetches nothing for a stranger's presence.
    see(avatars, _presence(xmpp, f"{ROMEO}/phone", ALICE, sha1(PNG)))
    # Presence to the listener, to a ghost's JID, from our own domain: no DM at all.
    ghost = f"xmpp_romeo=40xmpp.example\\3ahub.example@{DOMAIN}"
    for pfrom, pto in ((ROMEO, LISTENER), (ROMEO, ghost), (f"bob\\3ahub.example@{DOMAIN}", ALICE)):
        see(avatars, _presence(xmpp, pfrom, pto, sha1(PNG)))
    await ctx.settle()
    assert asked == [] and ctx.queued == []

    ctx.store.portals.add((ROMEO, "@alice:hub.example"))

    calls: list[str] = []

    async def refused(jid: str, asker: str = "") -> bytes | None:
        calls.append(jid)
        return decode_photo("%%% broken")

    async def timing_out(jid: str, asker: str = "") -> bytes | None:
        calls.append(jid)
        raise IqTimeout(xmpp.make_iq_get())

    avatars._vcard_data = timing_out  # the network is slow: asked again on the next presence
    see(avatars, _presence(xmpp, ROMEO, ALICE, sha1(PNG)))
    await ctx.settle()
    assert avatar_key(ROMEO) not in ctx.store.kv
    avatars._vcard_data = refused  # a broken picture is not asked for again
    for _ in range(2):
        see(avatars, _presence(xmpp, ROMEO, ALICE, sha1(PNG)))
        await ctx.settle()
    assert ctx.queued == [] and calls == [ROMEO, ROMEO]


def _occupant(xmpp: ComponentXMPP, nick: str, photo: str, *, to: str = LISTENER,
              real: str | None = None, room: str = ROOM) -> Presence:  # fmt: skip
    presence = _presence(xmpp, f"{room}/{nick}", to, photo)
    x = ET.SubElement(presence.xml, f"{{{MUC_USER_NS}}}x")
    item = ET.SubElement(x, f"{{{MUC_USER_NS}}}item", affiliation="none", role="participant")
    if real:
        item.set("jid", real)
    return presence


async def test_muc_occupants_get_avatars_only_from_rooms_we_are_in(setup: Any) -> None:
    avatars, xmpp, ctx, cards, asked = setup
    mucs: MucTracker = avatars._mucs
    ctx.store.portals.add((ROOM, ""))
    cards[f"{ROOM}/Juliet"] = PNG
    cards[ROMEO] = GIF
    # A room the bridge never joined: the presence is forged or stray.
    see(avatars, _occupant(xmpp, "Juliet", sha1(PNG), room="evil@muc.xmpp.example"))
    for presence in (_occupant(xmpp, "Juliet", sha1(PNG)),
                     _occupant(xmpp, "Romeo", sha1(GIF), real=f"{ROMEO}/phone")):  # fmt: skip
        mucs.room(ROOM)
        mucs.on_presence(presence)
        see(avatars, presence)
    # The copy a puppet gets, and our own occupant, are not looked at.
    mucs.room(ROOM).nicks[f"{ALICE}/pontis"] = "Alice"
    see(avatars, _occupant(xmpp, "Juliet", sha1(GIF), to=f"{ALICE}/pontis"))
    see(avatars, _occupant(xmpp, "Alice", sha1(GIF)))
    await ctx.settle()
    assert sorted(asked) == sorted([f"{ROOM}/Juliet", ROMEO])
    senders = {e.sender: e.sender_info.avatar.data for e in ctx.queued}
    assert senders == {f"{ROOM}/Juliet": PNG, ROMEO: GIF}
    assert all(e.portal == muc_key(ROOM) for e in ctx.queued)


# --- rooms the bridge hosts ----------------------------------------------------------------------


def _hosted_join(rooms: Any, frm: str, nick: str, photo: str) -> Presence:
    from tests.xmpp.test_hosted import NS
    from tests.xmpp.test_hosted import ROOM as HOSTED_ROOM

    xml = (f"<presence xmlns='{NS}' from='{frm}' to='{HOSTED_ROOM}/{nick}'>"
           "<x xmlns='http://jabber.org/protocol/muc'/>"
           f"<x xmlns='vcard-temp:x:update'><photo>{photo}</photo></x></presence>")  # fmt: skip
    return Presence(stream=rooms.component.xmpp, xml=ET.fromstring(xml))


async def test_hosted_rooms_show_hashes_and_pass_occupants_on() -> None:
    from tests.xmpp.test_hosted import ROOM as HOSTED_ROOM
    from tests.xmpp.test_hosted import MemoryStore, make_rooms

    rooms, sent, _ = await make_rooms(MemoryStore())
    alice_hash = sha1(GIF)
    rooms.photo_of = {"@alice:hub.example": alice_hash}.get
    seen: list[tuple[str, str]] = []
    rooms.on_occupant = lambda presence, room, user: seen.append((room, user))
    await rooms._on_stanza(_hosted_join(rooms, "xena@xmpp.example/phone", "Xena", sha1(PNG)))
    await rooms._on_stanza(_hosted_join(rooms, "mallory@evil.example/x", "Mallory", "&lt;junk&gt;"))

    def photos_to(jid: str) -> dict[str, str | None]:
        return {str(p["from"].resource): photo_hash(p) for p in sent
                if isinstance(p, Presence) and str(p["to"]) == jid}  # fmt: skip

    assert photos_to("xena@xmpp.example/phone")["Alice"] == alice_hash  # the Matrix member
    to_mallory = photos_to("mallory@evil.example/x")
    assert to_mallory["Xena"] == sha1(PNG)  # reflected with her presence (XEP-0153)
    assert photos_to("xena@xmpp.example/phone")["Mallory"] is None  # junk is not passed on
    assert seen == [(HOSTED_ROOM, "xena@xmpp.example"), (HOSTED_ROOM, "mallory@evil.example")]
