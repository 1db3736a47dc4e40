"""Presence both ways, and Matrix users' avatars in the presence the bridge sends as them.

Avatars (XEP-0153):

XMPP clients learn a contact's avatar from the hash in its presence and fetch the picture from
its vCard (answered in :mod:`bridge.xmpp.identity` from the Matrix profile). The bridge puts the
hash in every available presence of a Matrix user: to DM contacts (probes, subscriptions, and
after a change), as their occupant in bridged MUCs and in the rooms it hosts.

XEP-0084 (avatars in PEP) is not published: PEP belongs to a user's own server, and a
component's JIDs have none. vCard + XEP-0153 is what every XMPP client reads.

Presence, XMPP → Matrix: a DM contact's or a bridged MUC occupant's presence (``<show/>`` and
``<status/>``) is set on their ghost: available/chat → ``online``; away, xa, dnd →
``unavailable``; gone → ``offline``. A contact with several clients is as present as the most
present one (at most :data:`MAX_RESOURCES` clients each are counted). Only people with a portal
(a DM with a Matrix user, a bridged MUC) whose domain the federation policy lets in are set: a
stranger's presence changes no ghost. Where the homeserver keeps no presence, nothing is set
(the core logs it once).

Presence, Matrix → XMPP: where the homeserver sends ``m.presence`` to the bridge (presence on;
Synapse sends it to appservices with MSC2409, which the registration asks for), a Matrix user
who is ``unavailable`` is shown ``away`` and one who is ``offline`` as unavailable to their DM
contacts (``xa`` as a MUC occupant, who stays in the room). Until the homeserver said anything,
and always where presence is off, a Matrix user is ``available`` for as long as the bridge runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from xml.etree import ElementTree as ET

from slixmpp import JID, Presence

from bridge.core import ConnectorContext, MatrixPresence, MatrixProfile, RemoteUserID
from bridge.core.federation import remote_domain
from bridge.portal.models import Portal
from bridge.xmpp.avatars import PRESENT, UPDATE_NS, Origin
from bridge.xmpp.ids import NETWORK
from bridge.xmpp.muc import MucTracker
from bridge.xmpp.protocol.escaping import mxid_to_jid

PROFILE_TIMEOUT = 20.0
HASH_TTL = 600.0
"""Seconds a Matrix user's avatar hash is trusted without a profile change telling otherwise
(a change in a room the bridge is not in is seen only after this)."""
MAX_CACHED = 5000
TO_MATRIX = {"available": "online", "chat": "online", "away": "unavailable", "xa": "unavailable",
             "dnd": "unavailable"}  # fmt: skip
RANK = {"online": 2, "unavailable": 1, "offline": 0}
MAX_STATUS = 500
MAX_RESOURCES = 10
"""Clients of one person whose presence is counted; a further one is not looked at."""


def update_element(digest: str | None) -> ET.Element:
    """``<x xmlns='vcard-temp:x:update'>``: with ``<photo>`` = ``digest`` (empty: no avatar);
    without it when ``digest`` is None, which XEP-0153 reads as "not known yet"."""
    x = ET.Element(f"{{{UPDATE_NS}}}x")
    if digest is not None:
        ET.SubElement(x, f"{{{UPDATE_NS}}}photo").text = digest or None
    return x


class MatrixPhotos:
    """The XEP-0153 hash (sha-1 of the picture the vCard shows) of Matrix users' avatars."""

    def __init__(self, ctx: ConnectorContext, *,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._ctx = ctx
        self._log: logging.Logger = ctx.log
        self._clock = clock
        self._hashes: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._looking: set[str] = set()

    def cached(self, mxid: str) -> str | None:
        """The hash if known and fresh; else None, and it is looked up in the background so
        the next presence has it."""
        known = self._hashes.get(mxid)
        if known is not None and self._clock() - known[1] < HASH_TTL:
            return known[0]
        if mxid not in self._looking:
            self._looking.add(mxid)
            task = self._ctx.background(self.hash_of(mxid), name=f"avatar hash of {mxid}")
            task.add_done_callback(lambda _: self._looking.discard(mxid))
        return None

    async def hash_of(self, mxid: str, wait: float = PROFILE_TIMEOUT) -> str | None:
        """``mxid``'s avatar hash, ``""`` if they have none; None if the homeserver did not
        answer within ``wait`` s (then presence says "not known yet", not "no avatar")."""
        known = self._hashes.get(mxid)
        if known is not None and self._clock() - known[1] < HASH_TTL:
            return known[0]
        try:
            _, avatar, _ = await asyncio.wait_for(self._ctx.matrix_profile(mxid), wait)
        except Exception as err:
            self._log.info("Profile of %s unreadable (%s); presence goes without avatar hash",
                           mxid, err)  # fmt: skip
            return None
        digest = hashlib.sha1(avatar).hexdigest() if avatar else ""
        self._hashes[mxid] = (digest, self._clock())
        self._hashes.move_to_end(mxid)
        while len(self._hashes) > MAX_CACHED:
            self._hashes.popitem(last=False)
        return digest

    def forget(self, mxid: str) -> None:
        self._hashes.pop(mxid, None)


class MatrixAnnouncer:
    """Tells XMPP that a Matrix user changed their avatar (new presence with the new hash,
    where the change was seen: one call per portal room) or their presence."""

    def __init__(self, own_jid: str, send: Callable[[JID, JID], Awaitable[None]],
                 mucs: MucTracker, photos: MatrixPhotos) -> None:  # fmt: skip
        """``send(from, to)``: an available presence of a Matrix user (with caps and hash)."""
        self._own_jid = own_jid
        self._send = send
        self._mucs = mucs
        self._photos = photos
        self._seen: dict[str, str] = {}
        """mxid → the avatar_url of the last change handled: one profile fetch per change,
        however many rooms report it."""

    async def profile_changed(
        self, change: MatrixProfile, hosted: Callable[[str, str], None] | None = None
    ) -> None:
        """``hosted(room, mxid)``: the portal is a room the bridge hosts; it resends the
        member's occupant presence itself (with the hash, now in the cache)."""
        if not change.avatar_changed:
            return
        mxid, url = change.sender, change.avatar_url or ""
        if self._seen.get(mxid) != url:
            self._photos.forget(mxid)
            self._seen[mxid] = url
        await self._photos.hash_of(mxid)
        portal = change.portal
        if hosted is not None:
            hosted(portal.remote_id, mxid)
            return
        jid = mxid_to_jid(mxid, self._own_jid)
        if portal.is_direct:
            if "/" not in portal.remote_id:  # a MUC private chat goes through the occupant
                await self._send(JID(jid), JID(portal.remote_id))
            return
        full = f"{jid}/pontis"
        nick = self._mucs.room(portal.remote_id).nicks.get(full)
        if nick is not None:  # their occupant is in the room: the room tells everyone
            await self._send(JID(full), JID(f"{portal.remote_id}/{nick}"))

    async def presence_changed(self, mxid: str, portals: list[Portal]) -> None:
        """``mxid``'s presence changed (already in :class:`MatrixStates`): their DM contacts
        (among ``portals``) and the MUCs their occupant is in see it."""
        jid = mxid_to_jid(mxid, self._own_jid)
        for portal in portals:
            if portal.is_direct and portal.receiver == mxid and "/" not in portal.remote_id:
                await self._send(JID(jid), JID(portal.remote_id))
        full = f"{jid}/pontis"
        for room in list(self._mucs.rooms.values()):
            nick = room.nicks.get(full)
            if nick is not None:
                await self._send(JID(full), JID(f"{room.jid}/{nick}"))


class RemotePresence:
    """XMPP people's presence on their ghosts (see the module docstring)."""

    def __init__(self, ctx: ConnectorContext) -> None:
        self._ctx = ctx
        self._resources: OrderedDict[str, dict[str, tuple[str, str | None]]] = OrderedDict()
        """ghost's remote id → resource → (Matrix presence, status) of each client seen."""

    def on_presence(self, presence: Presence, origin: Origin | None) -> None:
        kind = presence["type"]
        if origin is None or (kind not in PRESENT and kind != "unavailable"):
            return
        user = origin.user
        resources = self._resources.setdefault(user, {})
        self._resources.move_to_end(user)
        while len(self._resources) > MAX_CACHED:
            self._resources.popitem(last=False)
        resource = presence["from"].resource if origin.key.receiver else ""  # a DM: per client
        status = (presence["status"] or "").strip()[:MAX_STATUS] or None
        if kind == "unavailable":
            resources.pop(resource, None)
        elif resource in resources or len(resources) < MAX_RESOURCES:
            resources[resource] = (TO_MATRIX[kind], status)
        if not resources:
            del self._resources[user]
        self._ctx.background(self._set(origin), name=f"presence of {user}")

    async def _set(self, origin: Origin) -> None:
        """Set ``origin``'s ghost presence, if they are someone the bridge talks with: as it
        is once that is known (a later presence may have come meanwhile)."""
        matrix = origin.key.receiver or self._ctx.bot_mxid
        if not self._ctx.federation.allows(NETWORK, remote_domain(origin.user), matrix) or (
            await self._ctx.store.get_portal(origin.key.remote_id, origin.key.receiver) is None
        ):
            self._resources.pop(origin.user, None)  # a stranger: nothing kept for them
            return
        resources = self._resources.get(origin.user, {})
        state, text = max(resources.values(), key=lambda s: RANK[s[0]], default=("offline", None))
        await self._ctx.set_ghost_presence(RemoteUserID(origin.user), state, text)


class MatrixStates:
    """Matrix users' presence as the homeserver last told it (nothing known: available)."""

    def __init__(self) -> None:
        self._states: OrderedDict[str, MatrixPresence] = OrderedDict()

    def changed(self, presence: MatrixPresence) -> bool:
        """Remember ``presence``; whether it differs from what XMPP was last shown."""
        before = self._states.get(presence.sender)
        self._states[presence.sender] = presence
        self._states.move_to_end(presence.sender)
        while len(self._states) > MAX_CACHED:
            self._states.popitem(last=False)
        if before is None:
            return presence.presence != "online" or presence.status is not None
        return (before.presence, before.status) != (presence.presence, presence.status)

    def decorate(self, stanza: Presence, mxid: str, *, in_muc: bool = False) -> None:
        """Give an available presence of ``mxid`` their show and status (or make it
        unavailable, for someone offline outside a MUC)."""
        state = self._states.get(mxid)
        if state is None:
            return
        if state.presence == "offline" and not in_muc:
            stanza["type"] = "unavailable"
        elif state.presence != "online":
            stanza["show"] = "xa" if state.presence == "offline" else "away"
        if state.status:
            stanza["status"] = state.status[:MAX_STATUS]
