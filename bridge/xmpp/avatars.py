"""XMPP people's avatars on their Matrix ghosts: XEP-0153 hashes and XEP-0084 notifications.

An XMPP client announces its avatar in two ways, and the bridge listens to both:

- XEP-0153: every presence carries ``<x xmlns='vcard-temp:x:update'><photo>sha-1</photo></x>``;
  the picture itself is in the vCard (XEP-0054). DM contacts send it to the Matrix user's JID,
  MUC occupants to everyone in the room (the listener hears it).
- XEP-0084: the user's server pushes the ``urn:xmpp:avatar:metadata`` PEP node to contacts
  that advertise ``…metadata+notify`` in their caps; the picture is in ``…avatar:data``.

The hash is the avatar's id: an unchanged hash is not fetched again (the last one is kept per
person in the store, and the core compares ``avatar_id`` once more). A picture must be an
image (PNG, JPEG, GIF or WebP, told by its first bytes, not by the type it claims) of at most
``MAX_AVATAR_BYTES``; anything else is logged and left out. Only people the bridge already has
a portal with are looked at: a stranger's presence makes the bridge fetch nothing.

What others announce is checked, as anyone can announce anything:

- a picture whose sha-1 is not the hash it was announced with is refused, and that hash is not
  fetched again for :data:`FETCH_WINDOW`; each person is fetched at most
  :data:`FETCHES_PER_USER` times, each portal (a room's occupants together)
  :data:`FETCHES_PER_PORTAL` times per window, and at most :data:`MAX_FETCHES` at once;
- a MUC occupant's real JID (``<item jid>``) is the room's claim. It stands for the person's
  own ghost (their avatar and presence on it, and where their vCard is asked) only when the
  JID's domain is the room service's or its parent (``muc.example.org`` → ``example.org``) and
  the hub's federation policy allows that domain; otherwise the occupant is room-local (their
  occupant-id or nick ghost, the vCard asked through the room), so that a hostile room cannot
  make the bridge ask third parties for vCards or change their ghosts;
- the last hash of a room-local ghost is remembered in memory only (at most
  :data:`MAX_LOCAL`), so that nick cycling does not grow the store; the ``avatar:`` keys of
  people are pruned by housekeeping when not written for a long time.

A removed avatar (XEP-0153's empty ``<photo/>``, XEP-0084's ``<metadata/>`` without
``<info/>``) clears the ghost's, once: "no avatar" is remembered like a hash, so a presence
that repeats it changes nothing; no ghost is made for it. A presence without ``<photo/>``
says nothing (not "removed"), and a person is only ever cleared by their own presence or PEP,
as any avatar change.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast
from xml.etree import ElementTree as ET

from slixmpp import JID, ComponentXMPP, Message, Presence
from slixmpp.exceptions import IqError, IqTimeout

from bridge.core import (
    ChatInfo,
    ConnectorContext,
    Media,
    PortalKey,
    RemoteChatInfo,
    RemoteUserID,
    UserInfo,
)
from bridge.xmpp.ids import NETWORK, dm_key, muc_key
from bridge.xmpp.invites import RateLimit
from bridge.xmpp.moderation import MucModeration, nick_ghost
from bridge.xmpp.muc import MUC_USER_NS, MucTracker, vouched_by_room
from bridge.xmpp.protocol.escaping import jid_to_mxid

UPDATE_NS = "vcard-temp:x:update"
VCARD_NS = "vcard-temp"
METADATA_NS = "urn:xmpp:avatar:metadata"
DATA_NS = "urn:xmpp:avatar:data"
PUBSUB_NS = "http://jabber.org/protocol/pubsub"
EVENT_NS = "http://jabber.org/protocol/pubsub#event"
MAX_AVATAR_BYTES = 1024 * 1024
FETCH_TIMEOUT = 10
FETCH_WINDOW = 600.0
FETCHES_PER_USER = 3
"""Avatar fetches of one person per :data:`FETCH_WINDOW` (a change, a retry, a spare)."""
FETCHES_PER_PORTAL = 20
"""Avatar fetches per :data:`FETCH_WINDOW` for one portal's people (a room's occupants)."""
MAX_FETCHES = 4
"""Fetches under way at once, in the whole component; more wait."""
MAX_WAITING = 200
"""People whose fetch is under way or waiting; presences beyond are not looked at."""
MAX_LOCAL = 5000
"""Room-local ghosts whose last avatar hash is remembered (in memory)."""
_SHA1 = re.compile(r"[0-9a-f]{40}")
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


PRESENT = ("available", "chat", "away", "xa", "dnd")
"""``presence["type"]`` of an available presence (slixmpp gives the ``<show/>`` there)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Who a presence is from, as the bridge shows them."""

    key: PortalKey
    """The portal they are seen in (a DM with one Matrix user, a MUC)."""
    user: RemoteUserID
    """Their ghost's remote id."""
    vcard: str
    """Where their vCard is asked for."""
    asker: str
    """Whom it is asked as (a room answers only its occupants)."""


class AvatarRefused(ValueError):
    """A picture the bridge does not put on a ghost (too large, no image, broken base64)."""


def avatar_key(user: str) -> str:
    """kv key: the hash of the last avatar of ``user`` handed to the core."""
    return f"avatar:{user}"


def photo_hash(stanza: Presence) -> str | None:
    """The XEP-0153 hash a presence announces: a sha-1, ``""`` for "no avatar", or None when
    it says nothing (no ``<x/>``, or ``<x/>`` without ``<photo/>``: "not ready yet")."""
    photo = stanza.xml.find(f"{{{UPDATE_NS}}}x/{{{UPDATE_NS}}}photo")
    if photo is None:
        return None
    value = (photo.text or "").strip().lower()
    return value if not value or _SHA1.fullmatch(value) else None


def metadata_hash(msg: Message) -> str | None:
    """The id (sha-1) of the avatar a XEP-0084 metadata notification announces; ``""`` when
    it says the avatar was removed; None if ``msg`` is no such notification."""
    items = msg.xml.find(f"{{{EVENT_NS}}}event/{{{EVENT_NS}}}items[@node='{METADATA_NS}']")
    if items is None:
        return None
    metadata = items.find(f"{{{EVENT_NS}}}item/{{{METADATA_NS}}}metadata")
    if metadata is None:
        return None
    for info in metadata.findall(f"{{{METADATA_NS}}}info"):
        value = (info.get("id") or "").lower()
        if info.get("url") is None and _SHA1.fullmatch(value):
            return value  # the one in the data node, not one elsewhere on the web
    return "" if not metadata.findall(f"{{{METADATA_NS}}}info") else None


def image_type(data: bytes) -> str | None:
    """The mime type of ``data`` if it is an image the bridge accepts, told by its first bytes."""
    for magic, mimetype in _IMAGE_MAGIC:
        if data.startswith(magic):
            return mimetype
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def decode_photo(text: str) -> bytes:
    """The bytes of a base64 avatar (a vCard's BINVAL, a XEP-0084 data item), checked: at most
    ``MAX_AVATAR_BYTES`` (refused before decoding) and an image."""
    packed = "".join(text.split())
    if len(packed) > (MAX_AVATAR_BYTES + 2) // 3 * 4:
        raise AvatarRefused(f"larger than {MAX_AVATAR_BYTES} bytes")
    try:
        data = base64.b64decode(packed, validate=True)
    except (binascii.Error, ValueError) as err:
        raise AvatarRefused(f"not base64: {err}") from None
    return checked_image(data)


def checked_image(data: bytes) -> bytes:
    if not data:
        raise AvatarRefused("empty")
    if len(data) > MAX_AVATAR_BYTES:
        raise AvatarRefused(f"larger than {MAX_AVATAR_BYTES} bytes")
    if image_type(data) is None:
        raise AvatarRefused("not a PNG, JPEG, GIF or WebP image")
    return data


def avatar_media(data: bytes) -> Media:
    """A checked picture as the ghost's avatar; its sha-1 is its id (the XEP-0153 hash)."""
    return Media(data=data, mimetype=image_type(data) or "application/octet-stream",
                 filename="avatar", size=len(data), avatar_id=hashlib.sha1(data).hexdigest())  # fmt: skip


def vcard_photo(card: ET.Element) -> bytes | None:
    """The checked picture of a vCard; None if it has none. Raises :class:`AvatarRefused`."""
    binval = card.findtext(f"{{{VCARD_NS}}}PHOTO/{{{VCARD_NS}}}BINVAL")
    return decode_photo(binval) if binval and binval.strip() else None


class RemoteAvatars:
    """Watches presence and PEP notifications and hands new avatars to the ghosts."""

    def __init__(self, ctx: ConnectorContext, xmpp: ComponentXMPP, own_jid: str,
                 listener: str, mucs: MucTracker, moderation: MucModeration,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._ctx = ctx
        self._clock = clock
        self._by_user = RateLimit(FETCHES_PER_USER, FETCH_WINDOW, clock)
        self._by_portal = RateLimit(FETCHES_PER_PORTAL, FETCH_WINDOW, clock)
        self._refused = RateLimit(1, FETCH_WINDOW, clock)
        """"user hash" of pictures that did not match their hash: not fetched again a while."""
        self._fetching = asyncio.Semaphore(MAX_FETCHES)
        self._local: OrderedDict[str, str] = OrderedDict()
        """room-local ghost → the hash of its last avatar handed to the core."""
        self._xmpp = xmpp
        self._own_jid = own_jid
        self._listener = listener
        self._mucs = mucs
        self._moderation = moderation
        self._log: logging.Logger = ctx.log
        self._busy: set[str] = set()
        """People whose avatar is being fetched: a burst of presences fetches once."""

    # --- what came in ---------------------------------------------------------------------------

    def origin(self, presence: Presence) -> Origin | None:
        """Who a presence the component got is from, as a ghost (call it after the MUC tracker
        saw it): a DM contact of a Matrix user, or an occupant of a bridged MUC (only the
        listener's copy; not our own occupants). None for anything else."""
        sender = presence["from"]
        if presence["type"] == "error":
            return None
        if sender.bare in self._mucs.rooms and sender.resource:
            return self._occupant(presence)
        key = self._dm_of(sender, presence["to"])
        if key is None:
            return None
        return Origin(key, RemoteUserID(key.remote_id), key.remote_id, self._own_jid)

    def on_presence(self, presence: Presence, origin: Origin | None) -> None:
        """Fetch the avatar a presence from ``origin`` (see :meth:`origin`) announces."""
        if origin is None or presence["type"] not in PRESENT:
            return
        digest = photo_hash(presence)
        if digest is not None:  # "" (no avatar) too
            self._start(origin.key, origin.user, digest,
                        lambda: self._vcard_data(origin.vcard, origin.asker))  # fmt: skip

    def on_message(self, msg: Message) -> bool:
        """Take a XEP-0084 metadata notification; False if ``msg`` is none (the caller goes on)."""
        digest = metadata_hash(msg)
        if digest is None:
            return False
        key = self._dm_of(msg["from"], msg["to"])
        if key is not None:
            user, asker = key.remote_id, str(msg["to"])
            self._start(
                key, RemoteUserID(user), digest, lambda: self._pep_data(user, digest, asker)
            )
        return True

    def hosted_origin(self, room: str, user: RemoteUserID) -> Origin:
        """An occupant of a room the bridge hosts: their vCard is at their own JID."""
        return Origin(muc_key(room), user, user, self._own_jid)

    def _dm_of(self, sender: JID, to: JID) -> PortalKey | None:
        """The DM of XMPP user ``sender`` with the Matrix user ``to`` stands for, if ``to`` is
        one (not the listener, not a ghost) and ``sender`` is no JID of ours."""
        if sender.domain == self._own_jid or to.bare == self._listener.split("/")[0]:
            return None
        mxid = jid_to_mxid(to.bare, self._own_jid)
        if mxid is None or self._ctx.parse_ghost_mxid(mxid) is not None:
            return None
        return dm_key(sender.bare, mxid)

    def _occupant(self, presence: Presence) -> Origin | None:
        room, nick = presence["from"].bare, presence["from"].resource
        tracked = self._mucs.rooms[room]
        if str(presence["to"]) != self._listener or tracked.is_ours(nick):
            return None
        item = presence.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
        if item is None:
            return None  # a room sends occupants' presence with muc#user; else it is no occupant
        shown = item.get("jid")  # also in an unavailable presence, which the tracker forgot
        real = shown.split("/")[0].lower() if shown else tracked.occupants.get(nick)
        if real is not None and JID(real).domain == self._own_jid:
            return None  # one of our Matrix users
        if real is not None and not self.vouched(room, real):
            real = None  # the room's claim only: the occupant is room-local
        by_id = self._moderation.sender_of(room, nick, cast(Message, presence))
        sender = RemoteUserID(real or by_id or nick_ghost(room, nick))
        # A room passes a vCard request for an occupant on to their bare JID, if it comes from
        # another occupant (the listener).
        if real:
            return Origin(muc_key(room), sender, real, self._own_jid)
        return Origin(muc_key(room), sender, f"{room}/{nick}", self._listener)

    def vouched(self, room: str, real: str) -> bool:
        """Whether ``room``'s claim that an occupant is ``real`` may stand for that person's own
        ghost: the JID is of the room's own server (the service's domain or its parent) and the
        federation policy lets that domain in."""
        try:
            domain = JID(real).domain.lower()
        except ValueError:
            return False
        return vouched_by_room(room, real) and self._ctx.federation.allows(
            NETWORK, domain, self._ctx.bot_mxid or self._own_jid
        )

    # --- fetching -------------------------------------------------------------------------------

    def _start(self, key: PortalKey, user: RemoteUserID, digest: str,
               fetch: Callable[[], Awaitable[bytes | None]]) -> None:  # fmt: skip
        if user in self._busy or len(self._busy) >= MAX_WAITING:
            return
        self._busy.add(user)
        task = self._ctx.background(self._update(key, user, digest, fetch), name=f"avatar {user}")
        task.add_done_callback(lambda _: self._busy.discard(user))

    async def _update(self, key: PortalKey, user: RemoteUserID, digest: str,
                      fetch: Callable[[], Awaitable[bytes | None]]) -> None:  # fmt: skip
        last = await self._last(user)
        if last == digest or not self._refused.peek(f"{user} {digest}"):
            return
        if await self._ctx.store.get_portal(key.remote_id, key.receiver) is None:
            return  # nobody on Matrix talks with them: fetch nothing
        if not digest:
            await self._removed(key, user, bool(last))
            return
        if not (self._by_user.allow(user) and self._by_portal.allow(key.remote_id)):
            self._log.info("Avatar %s of %s not fetched: too many fetches for them lately; "
                           "tried again on a later presence", digest, user)  # fmt: skip
            return
        try:
            async with self._fetching:
                data = await fetch()
        except AvatarRefused as err:
            self._log.info("Avatar %s of %s left out: %s", digest, user, err)
            await self._remember(user, digest)  # not fetched again
            return
        except (IqError, IqTimeout) as err:
            self._log.info("Avatar %s of %s not fetched (%s); tried again on their next "
                           "presence", digest, user, type(err).__name__)  # fmt: skip
            return
        if data is None:  # announced, but not published: nothing to show, nothing to ask again
            await self._remember(user, digest)
            return
        media = avatar_media(data)
        if media.avatar_id != digest:
            # Not what was announced (a forged hash, or changed again meanwhile: the next
            # presence announces that one): left out, and this hash not asked for a while.
            self._refused.allow(f"{user} {digest}")
            self._log.info("Avatar %s of %s left out: the picture's hash is %s", digest, user,
                           media.avatar_id)  # fmt: skip
            return
        info = RemoteChatInfo(portal=key, sender=user, sender_info=UserInfo(avatar=media),
                              info=ChatInfo(), create_portal=False)  # fmt: skip
        await self._ctx.queue_remote_event(info)
        await self._remember(user, digest)
        self._log.info("New avatar %s of %s for its ghost", digest, user)

    async def _removed(self, key: PortalKey, user: RemoteUserID, handed: bool) -> None:
        """``user`` has no avatar now: their ghost's is cleared, and "" remembered, so that
        repeating it changes nothing. ``handed``: an avatar of theirs went to the core (which
        may not have set it yet). A ghost that shows none (or no ghost: a lurker whose client
        says "no avatar" in every presence) is left alone, not made or joined."""
        if not handed:
            ghost = await self._ctx.store.get_ghost(user)
            if ghost is None:
                return
            if not ghost.avatar_mxc:
                await self._remember(user, "")
                return
        info = RemoteChatInfo(portal=key, sender=user, create_portal=False, info=ChatInfo(),
                              sender_info=UserInfo(avatar_removed=True))  # fmt: skip
        await self._ctx.queue_remote_event(info)
        await self._remember(user, "")
        self._log.info("Avatar of %s removed: cleared on its ghost", user)

    async def _last(self, user: str) -> str | None:
        """The hash of the last avatar of ``user`` handed to the core (or left out)."""
        if "/" in user:  # room-local: in memory only
            return self._local.get(user)
        return await self._ctx.store.kv_get(avatar_key(user))

    async def _remember(self, user: str, digest: str) -> None:
        if "/" not in user:
            await self._ctx.store.kv_set(avatar_key(user), digest)
            return
        self._local[user] = digest
        self._local.move_to_end(user)
        while len(self._local) > MAX_LOCAL:
            self._local.popitem(last=False)

    async def _vcard_data(self, jid: str, asker: str = "") -> bytes | None:
        iq = self._xmpp.make_iq_get(ito=JID(jid), ifrom=JID(asker or self._own_jid))
        iq.xml.append(iq.xml.makeelement(f"{{{VCARD_NS}}}vCard", {}))
        result = await iq.send(timeout=FETCH_TIMEOUT)
        card = result.xml.find(f"{{{VCARD_NS}}}vCard")
        return None if card is None else vcard_photo(card)

    async def _pep_data(self, jid: str, digest: str, asker: str) -> bytes | None:
        """The XEP-0084 data item ``digest``, asked as the Matrix user who is subscribed."""
        iq = self._xmpp.make_iq_get(ito=JID(jid), ifrom=JID(asker))
        pubsub = iq.xml.makeelement(f"{{{PUBSUB_NS}}}pubsub", {})
        items = ET.SubElement(pubsub, f"{{{PUBSUB_NS}}}items", node=DATA_NS)
        ET.SubElement(items, f"{{{PUBSUB_NS}}}item", id=digest)
        iq.xml.append(pubsub)
        result = await iq.send(timeout=FETCH_TIMEOUT)
        text = result.xml.findtext(
            f"{{{PUBSUB_NS}}}pubsub/{{{PUBSUB_NS}}}items/{{{PUBSUB_NS}}}item/{{{DATA_NS}}}data"
        )
        return decode_photo(text) if text else None
