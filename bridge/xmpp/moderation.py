"""Moderation between MUCs and Matrix rooms: XEP-0425 moderation ↔ redactions by moderators,
XEP-0421 occupant-ids for ghosts that survive a nick change, kicks of the Matrix users'
occupants, and the room subject kept in the store.

Trust comes from where a stanza comes from, never from what it says about itself:

- A moderation is announced by the room itself (from its bare JID). A retraction that claims
  to be a moderation but comes from an occupant is an author's retraction, and is bridged only
  if that occupant wrote the message.
- An occupant-id is believed only in a room that put one in our own join presence: such a room
  strips the ids clients write themselves (XEP-0421 §4), a room without the feature does not.
  Ghosts are keyed by (room, occupant-id), so an id copied from another room names nobody here.
- A kick is a presence from the room (status 307 or 301) to the occupant it removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slixmpp import JID, Iq, Message, Presence
from slixmpp.exceptions import IqError, IqTimeout

from bridge.core import (
    ChatInfo,
    ConnectorContext,
    MessagePart,
    PermanentError,
    RemoteChatID,
    RemoteChatInfo,
    RemoteKick,
    RemoteMessage,
    RemoteMessageID,
    RemotePowerLevel,
    RemoteUserID,
    TransientError,
)
from bridge.xmpp.component import Component
from bridge.xmpp.ids import muc_key
from bridge.xmpp.muc import MUC_USER_NS, MucTracker, vouched_by_room
from bridge.xmpp.rights import level_for

MODERATE_NS = "urn:xmpp:message-moderate:1"
"""XEP-0425 0.3 (current); prosody-modules' mod_muc_moderation speaks it (Debian's Prosody 0.12
and ejabberd 23.01 implement no XEP-0425 at all)."""
MODERATE_NS_0 = "urn:xmpp:message-moderate:0"
"""XEP-0425 0.2 (inside a XEP-0422 fastening): what older clients and servers announce."""
RETRACT_NS = "urn:xmpp:message-retract:1"
RETRACT_NS_0 = "urn:xmpp:message-retract:0"
FASTEN_NS = "urn:xmpp:fasten:0"
OCCUPANT_ID_NS = "urn:xmpp:occupant-id:0"
MODERATION_TIMEOUT = 15
MODERATED_FALLBACK = "This message was removed by a moderator."
KICKED, BANNED = "307", "301"
PORTAL_WAIT_SECONDS = 60


def occupant_ghost(room: str, occupant_id: str) -> RemoteUserID:
    """The ghost of the occupant the room knows as ``occupant_id``: one per (room, id), so a
    nick change or a rejoin keeps it, and the same id in another room is another person. The id
    is hashed: it is opaque and case-sensitive, Matrix user ids are lower case."""
    digest = hashlib.sha256(occupant_id.encode()).hexdigest()[:32]
    return RemoteUserID(f"{room}/occupant-id:{digest}")


def nick_ghost(room: str, nick: str) -> RemoteUserID:
    """The ghost of ``nick`` where nothing better is known. A nick that reads like an
    occupant-id ghost's (or like this escape) gets a ``~`` in front: otherwise anyone could
    speak as the ghost of the occupant whose id it spells."""
    escaped = f"~{nick}" if nick.startswith(("occupant-id:", "~")) else nick
    return RemoteUserID(f"{room}/{escaped}")


def stanza_real_jid(msg: Message) -> str | None:
    """The real bare JID a room put in a message it relays or archived (``<x
    xmlns='…muc#user'><item jid=…/>``, as non-anonymous rooms and MAM services may do)."""
    item = msg.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
    real = item.get("jid") if item is not None else None
    return real.split("/")[0].lower() if real else None


def occupant_id_of(stanza: Message | Presence) -> str | None:
    element = stanza.xml.find(f"{{{OCCUPANT_ID_NS}}}occupant-id")
    value = element.get("id") if element is not None else None
    return value or None


def announced_moderation(msg: Message, room: str) -> str | None:
    """The id of the message ``room`` says a moderator removed, if ``msg`` is such an
    announcement *from the room itself* (XEP-0425 0.3, or 0.2 in a fastening); else None."""
    if msg["type"] != "groupchat" or msg["from"].bare != room or msg["from"].resource:
        return None
    retract = msg.xml.find(f"{{{RETRACT_NS}}}retract")
    if retract is not None and retract.find(f"{{{MODERATE_NS}}}moderated") is not None:
        return retract.get("id") or None
    apply_to = msg.xml.find(f"{{{FASTEN_NS}}}apply-to")
    if apply_to is not None:
        moderated = apply_to.find(f"{{{MODERATE_NS_0}}}moderated")
        if moderated is not None and moderated.find(f"{{{RETRACT_NS_0}}}retract") is not None:
            return apply_to.get("id") or None
    return None


def moderation_request(component: Component, room: str, moderator: str, target: str,
                       reason: str) -> Iq:  # fmt: skip
    """The XEP-0425 0.3 request (an IQ set to the room) to remove ``target`` (a stanza-id)."""
    iq = component.xmpp.make_iq_set(ito=JID(room), ifrom=JID(moderator))
    moderate = iq.xml.makeelement(f"{{{MODERATE_NS}}}moderate", {"id": target})
    moderate.append(moderate.makeelement(f"{{{RETRACT_NS}}}retract", {}))
    if reason:
        element = moderate.makeelement(f"{{{MODERATE_NS}}}reason", {})
        element.text = reason
        moderate.append(element)
    iq.xml.append(moderate)
    return iq


def moderation_announcement(component: Component, room: str, occupant: str, target: str,
                            moderator_nick: str, announcement_id: str) -> Message:  # fmt: skip
    """What a room we host sends each occupant when a moderator removes ``target``: XEP-0425
    0.3 and, for clients that know only 0.2, the same in a fastening; a body for the rest."""
    msg = component.xmpp.make_message(
        mto=JID(occupant), mfrom=JID(room), mtype="groupchat", mbody=MODERATED_FALLBACK
    )
    msg["id"] = announcement_id
    msg["stanza_id"]["id"], msg["stanza_id"]["by"] = announcement_id, room
    by = f"{room}/{moderator_nick}"
    retract = msg.xml.makeelement(f"{{{RETRACT_NS}}}retract", {"id": target})
    retract.append(retract.makeelement(f"{{{MODERATE_NS}}}moderated", {"by": by}))
    msg.xml.append(retract)
    apply_to = msg.xml.makeelement(f"{{{FASTEN_NS}}}apply-to", {"id": target})
    moderated = apply_to.makeelement(f"{{{MODERATE_NS_0}}}moderated", {"by": by})
    moderated.append(moderated.makeelement(f"{{{RETRACT_NS_0}}}retract", {}))
    apply_to.append(moderated)
    msg.xml.append(apply_to)
    msg.enable("store")
    return msg


async def send_moderation(component: Component, room: str, moderator: str, target: str,
                          reason: str = "") -> None:  # fmt: skip
    """Ask ``room`` to remove ``target`` for everyone, as ``moderator`` (our occupant's full
    JID). A refusal is the Matrix moderator's to hear of, with what to do."""
    iq = moderation_request(component, room, moderator, target, reason)
    try:
        await iq.send(timeout=MODERATION_TIMEOUT)
    except IqTimeout as err:
        raise TransientError(f"{room} did not answer a moderation request") from err
    except IqError as err:
        condition = err.iq["error"]["condition"]
        hint = {
            "forbidden": "your occupant there is not a moderator",
            "not-allowed": "your occupant there is not a moderator",
            "feature-not-implemented": "its server does not support moderation (XEP-0425)",
            "service-unavailable": "its server does not support moderation (XEP-0425)",
            "item-not-found": "the room no longer knows that message",
        }.get(condition, condition)
        raise PermanentError(
            f"{room} refused moderation of {target}: {condition}",
            user_message=f"The message was removed in Matrix only: {room} refused to remove it "
            f"for XMPP users ({hint}).",
        ) from err


@dataclass
class _RoomState:
    joined: bool = False
    """Whether the room reflected our listener's join (status 110)."""
    occupant_ids: bool = False
    """Whether the room put an occupant-id in our own join presence (so it strips forged ones)."""
    ids: dict[str, str] = field(default_factory=dict)
    """nick → occupant-id, as the room announced them in presence."""
    rights: dict[str, tuple[str | None, str, str]] = field(default_factory=dict)
    """nick → (real JID if shown, affiliation, role), as the room announced them."""
    levels: dict[str, int] = field(default_factory=dict)
    """ghost → the power level last asked for in the portal."""


class MucModeration:
    """What the listener learns from MUC presence that moderation needs, and the Matrix users
    whose occupant an XMPP moderator removed (not let back in until they rejoin in Matrix)."""

    def __init__(self, ctx: ConnectorContext, listener: str,
                 puppet_mxid: Callable[[str], str | None], mucs: MucTracker) -> None:  # fmt: skip
        self._ctx = ctx
        self._mucs = mucs
        """The rooms we join and our own occupants' nicks in them."""
        self._listener = listener
        """The listener's full JID."""
        self._puppet_mxid = puppet_mxid
        """The Matrix user behind one of our occupants' bare JIDs, else None."""
        self._rooms: dict[str, _RoomState] = {}
        self._waiting: dict[str, list[RemotePowerLevel]] = {}
        """room → power levels waiting for its portal (see :meth:`_when_portal`)."""
        self.bots: set[str] = {ctx.bot_mxid} if ctx.bot_mxid else set()
        """The Matrix bot that relays others' messages (also learnt from relayed events)."""
        self._removed: dict[tuple[str, str], str] = {}
        """(room, mxid) → why the room removed their occupant (kicked, banned)."""

    def forget_all(self) -> None:
        """The stream dropped: what rooms said about themselves is asked again on rejoin."""
        self._rooms.clear()

    def trusts_occupant_ids(self, room: str) -> bool:
        state = self._rooms.get(room)
        return state is not None and state.joined and state.occupant_ids

    def occupant_ids(self, room: str) -> dict[str, str]:
        """nick → occupant-id in ``room``, where the room vouches for them."""
        return dict(self._rooms[room].ids) if self.trusts_occupant_ids(room) else {}

    def sender_of(self, room: str, nick: str, msg: Message, *,
                  live: bool = True) -> RemoteUserID | None:  # fmt: skip
        """The occupant-id ghost of what ``nick`` said in ``room``, where the room vouches for
        occupant-ids; None to fall back to the real JID or the nick. Not ``live`` (archived or
        delayed): only the id in the stanza counts, as today's holder of the nick may be
        someone else than who wrote it."""
        if not self.trusts_occupant_ids(room):
            return None
        occupant = occupant_id_of(msg) or (self._rooms[room].ids.get(nick) if live else None)
        return occupant_ghost(room, occupant) if occupant else None

    def on_presence(self, presence: Presence) -> None:
        room, nick = presence["from"].bare, presence["from"].resource
        x = presence.xml.find(f"{{{MUC_USER_NS}}}x")
        if not nick or x is None or presence["type"] == "error":
            return  # not a MUC occupant's presence (a room sends those from room/nick)
        statuses = {s.get("code") for s in x.findall(f"{{{MUC_USER_NS}}}status")}
        to = str(presence["to"])
        if to == self._listener:
            if room not in self._mucs.rooms:
                return  # no room we ever joined
            occupant = occupant_id_of(presence)
            # The room sends the others' presence first, ours (110) last (XEP-0045 §7.2.3).
            state = self._rooms.setdefault(room, _RoomState())
            if "110" in statuses:  # our own join (or removal), as the room reflects it
                if presence["type"] == "unavailable":
                    self._rooms.pop(room, None)
                else:
                    state.joined, state.occupant_ids = True, occupant is not None
                    for other in list(state.rights):
                        self._sync_level(room, other, state)
                return
            if presence["type"] == "unavailable":
                if state.joined:
                    self._removed_by_room(room, nick, x, statuses, state)
                state.ids.pop(nick, None)
                state.rights.pop(nick, None)
                return
            if occupant:
                state.ids[nick] = occupant
            item = x.find(f"{{{MUC_USER_NS}}}item")
            if item is not None:
                real = item.get("jid")
                state.rights[nick] = (real.split("/")[0].lower() if real else None,
                                      item.get("affiliation", "none"), item.get("role", "none"))  # fmt: skip
                if state.joined:
                    self._sync_level(room, nick, state)
            return
        joined = room in self._rooms and self._rooms[room].joined
        if presence["type"] != "unavailable" or "110" not in statuses or not joined:
            return  # only a room the listener is in removes our occupants from it
        removed = BANNED if BANNED in statuses else KICKED if KICKED in statuses else None
        mxid = self._puppet_mxid(presence["to"].bare)
        if removed is None or mxid is None or mxid in self.bots:
            return  # the relay bot is never held out: it is how relay-level users are heard
        reason = x.findtext(f"{{{MUC_USER_NS}}}item/{{{MUC_USER_NS}}}reason") or ""
        what = "banned" if removed == BANNED else "kicked"
        self._removed[(room, mxid)] = what
        text = (f"An XMPP moderator {what} {mxid} from {room}"
                f"{f' ({reason.strip()[:200]})' if reason.strip() else ''}. What they write here "
                f"is not sent to XMPP until they leave and join this room again.")  # fmt: skip
        self._ctx.background(self._notice(room, text), name=f"notice {what} {room}")

    def _removed_by_room(self, room: str, nick: str, x: Any, statuses: set[str | None],
                         state: _RoomState) -> None:  # fmt: skip
        """An XMPP person kicked (307) or banned (301) by the room: their ghost is kicked or
        banned from the portal by the bridge's bot. Our own occupants are handled above."""
        tracked = self._mucs.rooms.get(room)
        if not statuses & {KICKED, BANNED} or tracked is None or tracked.is_ours(nick):
            return
        item = x.find(f"{{{MUC_USER_NS}}}item")
        real = item.get("jid") if item is not None else None
        if real and self._puppet_mxid(real.split("/")[0].lower()) is not None:
            return  # a Matrix user's occupant under a nick we forgot: no ghost of theirs
        target = self._ghost(room, nick, real, state)
        reason = (item.findtext(f"{{{MUC_USER_NS}}}reason") if item is not None else None) or ""
        kick = RemoteKick(portal=muc_key(room), target=RemoteUserID(target),
                          ban=BANNED in statuses, reason=reason.strip()[:200])  # fmt: skip
        self._ctx.background(self._ctx.queue_remote_event(kick), name=f"kick in {room}")

    @staticmethod
    def _ghost(room: str, nick: str, real: str | None, state: _RoomState) -> str:
        """The ghost of occupant ``nick``: by real JID, else occupant-id, else nick."""
        occupant = state.ids.get(nick) if state.occupant_ids else None
        if real and vouched_by_room(room, real.split("/")[0].lower()):
            return real.split("/")[0].lower()
        return occupant_ghost(room, occupant) if occupant else nick_ghost(room, nick)

    def _sync_level(self, room: str, nick: str, state: _RoomState) -> None:
        """The ghost of ``nick`` gets the power level its affiliation and role give (the table
        in :mod:`bridge.xmpp.rights`), when that changed; nobody is given 0 unasked."""
        tracked = self._mucs.rooms.get(room)
        if tracked is None or tracked.is_ours(nick) or nick not in state.rights:
            return
        real, affiliation, role = state.rights[nick]
        if real and self._puppet_mxid(real) is not None:
            return  # a Matrix user's occupant: their power level is Matrix's own
        ghost, level = self._ghost(room, nick, real, state), level_for(affiliation, role)
        if state.levels.get(ghost, 0) == level:
            return
        state.levels[ghost] = level
        event = RemotePowerLevel(portal=muc_key(room), target=RemoteUserID(ghost), level=level)
        waiting = self._waiting.get(room)
        if waiting is not None:  # one wait per room, however many occupants it announces
            waiting.append(event)
            return
        self._waiting[room] = [event]
        self._ctx.background(self._when_portal(room), name=f"rights in {room}")

    async def _when_portal(self, room: str) -> None:
        """Queue the room's waiting power levels, in order, once its portal exists: the
        listener learns the occupants' rights as it joins, which is before the portal of a room
        joined by its alias exists (the core drops what comes for a portal it does not have)."""
        try:
            for _ in range(PORTAL_WAIT_SECONDS):
                portal = await self._ctx.store.get_portal(RemoteChatID(room))
                if portal is not None and portal.mxid:
                    while waiting := self._waiting.get(room):
                        await self._ctx.queue_remote_event(waiting.pop(0))
                    return
                await asyncio.sleep(1)
            self._log_dropped(room, self._waiting.get(room, []))
        finally:
            self._waiting.pop(room, None)

    def _log_dropped(self, room: str, events: list[RemotePowerLevel]) -> None:
        self._ctx.log.info("No portal for %s after %d s: %d power levels not set; they are set "
                           "when the room is joined again", room, PORTAL_WAIT_SECONDS,
                           len(events))  # fmt: skip
        state = self._rooms.get(room)
        if state is not None:
            for event in events:
                state.levels.pop(event.target, None)

    def refusal(self, room: str, mxid: str) -> PermanentError | None:
        """Why ``mxid`` may not (re)join ``room`` as an occupant now, if they may not."""
        what = self._removed.get((room, mxid))
        if what is None:
            return None
        return PermanentError(
            f"{mxid} was {what} from {room}",
            user_message=f"You were {what} from {room} on XMPP; leave and rejoin this room to "
            "try again.",
        )

    def relayed_by(self, mxid: str) -> None:
        """``mxid`` relays relay-level users' messages (the bridge bot): a kick of its occupant
        is not held against it, as it never "rejoins in Matrix" to lift it."""
        if mxid not in self.bots:
            self.bots.add(mxid)
            for key in [k for k in self._removed if k[1] == mxid]:
                del self._removed[key]

    def matrix_rejoined(self, room: str, mxid: str) -> None:
        self._removed.pop((room, mxid), None)

    async def _notice(self, room: str, text: str) -> None:
        await self._ctx.queue_remote_event(RemoteMessage(
            portal=muc_key(room), id=RemoteMessageID(f"pontis-notice:{room}:{time.time_ns()}"),
            parts=[MessagePart(text=text, notice=True)], create_portal=False,
        ))  # fmt: skip


def subject_key(room: str) -> str:
    """kv key: the subject of ``room`` as the bridge last took it."""
    return f"subject:{room}"


async def take_subject(ctx: ConnectorContext, room: str, subject: str) -> None:
    """The room's subject, as it is on every join and after each change: stored (it survives a
    restart) and, when it differs from what was stored, shown as the Matrix topic."""
    if await ctx.store.kv_get(subject_key(room)) == subject:
        return  # the subject every join repeats
    await ctx.store.kv_set(subject_key(room), subject)
    await ctx.queue_remote_event(
        RemoteChatInfo(portal=muc_key(room), info=ChatInfo(topic=subject), create_portal=False)
    )


# --- kicks and bans from Matrix ---------------------------------------------------------------

ADMIN_NS = "http://jabber.org/protocol/muc#admin"


def ban_key(room: str, person: str) -> str:
    """kv key: ``person`` (bare JID) is banned from ``room``, a room the bridge hosts."""
    return f"ban:{room}:{person}"


def mark_removed(presence: Presence, *, ban: bool, reason: str) -> Presence:
    """Make an unavailable occupant presence say the occupant was kicked (307) or banned (301)
    by a moderator (XEP-0045 §8.2, §9.1), with the moderator's reason."""
    x = presence.xml.find(f"{{{MUC_USER_NS}}}x")
    assert x is not None
    item = x.find(f"{{{MUC_USER_NS}}}item")
    if item is not None:
        item.set("role", "none")
        item.set("affiliation", "outcast" if ban else item.get("affiliation", "none"))
        if reason:
            element = item.makeelement(f"{{{MUC_USER_NS}}}reason", {})
            element.text = reason
            item.append(element)
    x.append(x.makeelement(f"{{{MUC_USER_NS}}}status", {"code": BANNED if ban else KICKED}))
    return presence


def nick_of_ghost(room: str, ghost: str, occupants: dict[str, str | None],
                  ids: dict[str, str]) -> tuple[str | None, str | None]:  # fmt: skip
    """(nick, real bare JID) in ``room`` of the person behind ``ghost`` (a remote user id):
    ``room/nick``, ``room/occupant-id:…`` or a real JID the room revealed."""
    if ghost.startswith(f"{room}/occupant-id:"):
        for nick, occupant in ids.items():
            if occupant_ghost(room, occupant) == ghost:
                return nick, occupants.get(nick)
        return None, None
    if ghost.startswith(f"{room}/"):
        nick = ghost[len(room) + 1 :]
        nick = nick[1:] if nick.startswith("~") else nick  # see nick_ghost
        return (nick, occupants.get(nick)) if nick in occupants else (None, None)
    for nick, real in occupants.items():
        if real == ghost:
            return nick, real
    return None, ghost


async def remove_from_muc(component: Component, room: str, moderator: str, *, nick: str | None,
                          real: str | None, ban: bool, reason: str) -> None:  # fmt: skip
    """Ask ``room`` (XEP-0045 §8.2 / §9.1), as ``moderator`` (the Matrix moderator's occupant),
    to kick the occupant ``nick`` or ban ``real``. A refusal says what to do."""
    item: dict[str, str] = {"jid": real, "affiliation": "outcast"} if ban and real else {}
    if not item:
        if nick is None:
            raise PermanentError(
                f"no occupant to remove in {room}",
                user_message=f"They are not in {room} on XMPP now, and the room does not show "
                "their address, so the bridge cannot remove or ban them there.",
            )
        item = {"nick": nick, "role": "none"}
    iq = component.xmpp.make_iq_set(ito=JID(room), ifrom=JID(moderator))
    query = iq.xml.makeelement(f"{{{ADMIN_NS}}}query", {})
    element = query.makeelement(f"{{{ADMIN_NS}}}item", item)
    if reason:
        why = element.makeelement(f"{{{ADMIN_NS}}}reason", {})
        why.text = reason
        element.append(why)
    query.append(element)
    iq.xml.append(query)
    try:
        await iq.send(timeout=MODERATION_TIMEOUT)
    except IqTimeout as err:
        raise TransientError(f"{room} did not answer a kick") from err
    except IqError as err:
        condition = err.iq["error"]["condition"]
        raise PermanentError(
            f"{room} refused to remove {nick or real}: {condition}",
            user_message=f"They were removed in Matrix only: {room} refused it on XMPP "
            f"({condition}; your occupant there needs to be a moderator to kick, an admin "
            "or owner to ban).",
        ) from err
    if ban and not real:
        raise PermanentError(
            f"{room} does not reveal {nick}'s address",
            user_message=f"{room} does not show their XMPP address, so they were kicked there, "
            "not banned: they can come back.",
        )
