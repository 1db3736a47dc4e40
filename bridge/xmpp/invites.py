"""MUC invitations both ways.

XMPP → Matrix: a direct invitation (XEP-0249, ``<x xmlns='jabber:x:conference' jid=room/>`` from
the inviter) or a mediated one (XEP-0045 §7.8.2, from the room, ``<x xmlns='…muc#user'><invite
from=inviter/>``) addressed to a Matrix user's JID becomes a Matrix invitation of that user to
the room's portal; the bridge joins the MUC first if it has no portal yet. Who vouches for it:

- a mediated invitation counts only when the room itself sends it (its bare JID): the room
  checked that the inviter may invite, and a members-only room made the invitee a member;
- a direct invitation counts only when, once the bridge is in the room, the inviter is one of
  its occupants and the room shows their real JID. Anyone can send one, naming any room, so
  without this anyone could bring a Matrix user (their own, say) into a room someone else
  bridged, members-only or not.

Rooms on the bridge's own domains (any component's, including the rooms it hosts, whose
membership is decided in Matrix) are never joined this way. The component that serves the room
joins it (:class:`bridge.xmpp.components.XmppClients`), whichever received the invitation.

Both the sender's and the room's domains must be allowed to reach that Matrix user by the hub's
federation policy. Limits count the stanza's real sender (its bare JID and its domain); a
room's mediated invitations count per room and claimed inviter (what the room wrote), under a
cap for the room and its server, so one busy inviter does not use up the others'. Before the
bridge joins a room it is not in, a smaller per-sender join limit and one for the whole hub
apply; a sender whose invitation then counts gets their join slot back. The
per-Matrix-user limit and the one-invitation-per-room-and-user rule count only invitations that
counted, so forged ones cannot use them up. All limits are shared by all components
(:class:`InviteLimits`), so nobody can make the bridge join rooms or fill someone's invitations
by sending many.

Matrix → XMPP: a Matrix user who invites an XMPP person's ghost into a MUC's portal (bridged or
hosted) has the room invite them (:mod:`bridge.xmpp.matrix_invites`), after the checks here.
The core checked the inviter's permission level and the federation policy before it asks.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from typing import Protocol

from slixmpp import Message

from bridge.core import (
    BridgeError,
    ChatInfo,
    ConnectorContext,
    NotSupported,
    PortalKey,
    RemoteChatInfo,
    RemoteUserID,
)
from bridge.portal.models import Portal
from bridge.xmpp.component import Component
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.ids import NETWORK, muc_key
from bridge.xmpp.matrix_invites import MatrixInvitations
from bridge.xmpp.muc import MUC_USER_NS
from bridge.xmpp.protocol.escaping import (
    bare_jid,
    is_valid_jid,
    jid_to_mxid,
    split_jid,
)

CONFERENCE_NS = "jabber:x:conference"
PER_INVITER = 5
"""Invitations one XMPP address (or one Matrix user) may send per :data:`WINDOW`."""
PER_DOMAIN = 20
"""Invitations one XMPP domain may send per :data:`WINDOW`, all its addresses together."""
PER_INVITEE = 10
"""Invitations one Matrix user may receive from XMPP per :data:`WINDOW`."""
PER_ROOM = 2 * PER_INVITER
"""Mediated invitations one room may send per :data:`WINDOW`, all its inviters together."""
JOINS_PER_SENDER = 2
"""Rooms the bridge is not in that one sender's unconfirmed invitations may make it join."""
HUB_JOINS = 50
"""Rooms invitations may make the bridge join per :data:`WINDOW`, in the whole hub."""
WINDOW = 600.0
REPEAT_WINDOW = 3600.0
"""The same room invites the same Matrix user once in this long; repeats are dropped."""
MAX_KEYS = 10_000
"""Keys a :class:`RateLimit` remembers at most; the least recently used go first."""
MAX_REASON = 500

Clock = Callable[[], float]


class RateLimit:
    """At most ``limit`` events per key in a sliding ``window`` of seconds.

    Keys are kept least recently used first, so forgetting the quiet ones looks at the oldest
    only: each call costs O(1) amortised however many strangers send. Past :data:`MAX_KEYS`
    the oldest key goes even if it is not quiet yet (the per-domain and hub limits still hold).
    """

    def __init__(self, limit: int, window: float, clock: Clock) -> None:
        self._limit, self._window, self._clock = limit, window, clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str) -> bool:
        now = self._clock()
        seen = self._seen.pop(key, None) or deque()
        while seen and seen[0] <= now - self._window:
            seen.popleft()
        allowed = len(seen) < self._limit
        if allowed:
            seen.append(now)
        if seen:
            self._seen[key] = seen  # now the most recently used
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if len(self._seen) <= MAX_KEYS and oldest[-1] > now - self._window:
                break
            self._seen.popitem(last=False)
        return allowed

    def peek(self, key: str) -> bool:
        """Whether :meth:`allow` would allow ``key`` now, without counting it."""
        seen = self._seen.get(key)
        now = self._clock()
        return seen is None or sum(1 for t in seen if t > now - self._window) < self._limit

    def refund(self, key: str) -> None:
        """Take back the last event counted for ``key``."""
        seen = self._seen.get(key)
        if seen:
            seen.pop()
        if not seen:
            self._seen.pop(key, None)

    def __len__(self) -> int:
        return len(self._seen)


class InviteLimits:
    """The hub's invitation limits, one set shared by every component."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.by_sender = RateLimit(PER_INVITER, WINDOW, clock)
        self.by_domain = RateLimit(PER_DOMAIN, WINDOW, clock)
        self.by_room = RateLimit(PER_ROOM, WINDOW, clock)
        self.by_invitee = RateLimit(PER_INVITEE, WINDOW, clock)
        self.repeats = RateLimit(1, REPEAT_WINDOW, clock)
        self.joins_by_sender = RateLimit(JOINS_PER_SENDER, WINDOW, clock)
        self.joins = RateLimit(HUB_JOINS, WINDOW, clock)
        self.from_matrix = RateLimit(PER_INVITER, WINDOW, clock)


class Rooms(Protocol):
    """The MUCs of the whole hub, each handled by the component that serves it."""

    async def bridge_room(self, remote_id: str, matrix_user: str) -> tuple[PortalKey, ChatInfo]:
        """Join ``remote_id`` if need be: its portal key and chat info."""
        ...

    def real_occupants(self, room: str) -> Collection[str]:
        """The real bare JIDs (lower case) of ``room``'s occupants, where the room shows them."""
        ...

    def leave_unbridged(self, room: str) -> None:
        """The bridge joined ``room`` for nothing: leave it unless it has a portal."""
        ...

    def owns(self, domain: str) -> bool:
        """Whether ``domain`` is one of the bridge's own (a component's or a rooms domain)."""
        ...


def parse_invitation(msg: Message) -> tuple[str, str, str, bool] | None:
    """(room, claimed inviter, reason, mediated) of an invitation, or None if ``msg`` is none.
    The inviter of a mediated invitation is what the room wrote: shown, never trusted."""
    # Mediated first: rooms (Prosody) add a XEP-0249 element to their mediated invitations.
    invite = msg.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}invite")
    if invite is not None:
        reason = invite.findtext(f"{{{MUC_USER_NS}}}reason") or ""
        return msg["from"].bare, invite.get("from", ""), reason, True
    direct = msg.xml.find(f"{{{CONFERENCE_NS}}}x")
    if direct is not None:
        return direct.get("jid", ""), str(msg["from"]), direct.get("reason", ""), False
    return None


def is_invitation(msg: Message) -> bool:
    return msg["type"] != "groupchat" and parse_invitation(msg) is not None


class Invitations:
    def __init__(self, ctx: ConnectorContext, cfg: XmppConfig, component: Component,
                 rooms: Rooms, limits: InviteLimits | None = None,
                 outgoing: MatrixInvitations | None = None) -> None:  # fmt: skip
        self._ctx = ctx
        self._outgoing = outgoing
        """Sends Matrix users' invitations; without it they cannot be sent."""
        self._cfg = cfg
        self._component = component
        self.rooms = rooms
        """The hub's rooms: :class:`XmppClients` puts itself here when there are several."""
        self.limits = limits or InviteLimits()
        """Replaced by the hub's shared set when there are several components."""
        self._log = ctx.log.getChild("invites")
        self._joining: dict[str, tuple[asyncio.Lock, int]] = {}
        """room → (held while an invitation to it is followed, how many wait): one join at a
        time per room, as joins of one room at once would wait for each other's answer."""

    # --- XMPP → Matrix ----------------------------------------------------------------------------

    async def from_xmpp(self, msg: Message) -> None:
        """An invitation addressed to a Matrix user's JID; dropped (with a log line) when the
        policy or a limit refuses it: an error would tell a stranger who exists."""
        parsed = parse_invitation(msg)
        mxid = jid_to_mxid(msg["to"].bare, self._cfg.jid)
        if parsed is None or mxid is None or self._ctx.parse_ghost_mxid(mxid) is not None:
            return
        room, claimed, _, mediated = parsed
        sender, sender_domain = msg["from"].bare.lower(), msg["from"].domain.lower()
        if mediated and msg["from"].resource:
            self._log.info("Dropped an invitation of %s from %s: a room invites from its bare "
                           "address", mxid, msg["from"])  # fmt: skip
            return
        if not is_valid_jid(room) or not sender:
            self._log.info("Dropped an invitation to %s from %s: malformed room",
                           mxid, msg["from"])  # fmt: skip
            return
        local, domain, resource = split_jid(room)
        room = bare_jid(room)
        if local is None or resource is not None or self.rooms.owns(domain.lower()):
            self._log.info("Dropped an invitation of %s to %r: not a room the bridge may join",
                           mxid, room)  # fmt: skip
            return
        for who in {sender_domain, domain.lower()}:
            if refused := self._ctx.federation.refusal(NETWORK, who, mxid, entry="xmpp invite"):
                self._log.info("Dropped %s's invitation of %s to %s: %s", sender, mxid, room,
                               refused)  # fmt: skip
                return
        limits = self.limits
        sender_key = f"{room} {claimed[:200].lower()}" if mediated else sender
        if not (limits.by_sender.allow(sender_key) and limits.by_domain.allow(sender_domain)
                and (not mediated or limits.by_room.allow(room))):  # fmt: skip
            self._log.warning("Dropped %s's invitation of %s to %s: too many invitations",
                              sender, mxid, room)  # fmt: skip
            return
        # Only looked at here: they count once the invitation did (in _follow).
        if not limits.by_invitee.peek(mxid):
            self._log.warning("Dropped %s's invitation of %s to %s: %s had too many "
                              "invitations lately", sender, mxid, room, mxid)  # fmt: skip
            return
        if not limits.repeats.peek(f"{room} {mxid}"):
            self._log.info("Dropped a repeated invitation of %s to %s", mxid, room)
            return
        inviter = sender if not mediated else f"{room} (for {claimed[:100] or 'someone'})"
        joiner = room if mediated else sender  # a room vouches for its own invitations
        # In the background: joining waits for the room's presences, which come in behind us.
        self._ctx.background(self._invite(room, inviter, mxid, None if mediated else sender,
                                          joiner), name=f"invitation to {room}")  # fmt: skip

    async def _invite(self, room: str, inviter: str, mxid: str, occupant: str | None,
                      joiner: str) -> None:  # fmt: skip
        lock, waiting = self._joining.get(room, (asyncio.Lock(), 0))
        self._joining[room] = (lock, waiting + 1)
        try:
            async with lock:
                await self._follow(room, inviter, mxid, occupant, joiner)
        finally:
            lock, waiting = self._joining[room]
            if waiting > 1:
                self._joining[room] = (lock, waiting - 1)
            else:
                del self._joining[room]

    async def _follow(self, room: str, inviter: str, mxid: str, occupant: str | None,
                      joiner: str) -> None:  # fmt: skip
        """``occupant``: the real JID a direct invitation came from, who must be in the room;
        ``joiner``: whose join limit a join of the room counts against."""
        limits = self.limits
        if not limits.repeats.peek(f"{room} {mxid}"):  # one before us (same lock) counted
            self._log.info("Dropped a repeated invitation of %s to %s", mxid, room)
            return
        key = muc_key(room)
        existing = await self._ctx.store.get_portal(key.remote_id)
        chat_info = None
        if existing is None or existing.mxid is None:
            if not (limits.joins_by_sender.allow(joiner) and limits.joins.allow("hub")):
                self._log.warning("Dropped %s's invitation of %s to %s: invitations made the "
                                  "bridge join too many rooms lately", inviter, mxid, room)  # fmt: skip
                return
            try:
                key, chat_info = await self.rooms.bridge_room(room, mxid)
            except BridgeError as err:
                self._log.info("Could not follow %s's invitation of %s to %s: %s", inviter,
                               mxid, room, err or "no answer")  # fmt: skip
                return
        if occupant is not None and occupant not in self.rooms.real_occupants(room):
            self._log.warning("Dropped %s's invitation of %s to %s: the room does not show "
                              "them as an occupant", inviter, mxid, room)  # fmt: skip
            if chat_info is not None:
                self.rooms.leave_unbridged(room)
            return
        if not limits.repeats.allow(f"{room} {mxid}") or not limits.by_invitee.allow(mxid):
            self._log.info("Dropped %s's invitation of %s to %s: a repeat, or too many "
                           "invitations of them lately", inviter, mxid, room)  # fmt: skip
            if chat_info is not None:
                self.rooms.leave_unbridged(room)
            return
        if chat_info is not None:  # the invitation counted: its sender's join is not held
            limits.joins_by_sender.refund(joiner)
        self._log.info("%s invited %s to %s", inviter, mxid, room)
        await self._ctx.queue_remote_event(RemoteChatInfo(
            portal=key, info=ChatInfo(matrix_users=[mxid]), chat_info=chat_info,
            create_portal=chat_info is not None,
        ))  # fmt: skip

    # --- Matrix → XMPP ----------------------------------------------------------------------------

    async def from_matrix(self, portal: Portal, inviter: str, user: RemoteUserID) -> None:
        """``inviter`` invited ``user``'s ghost into ``portal``: the room invites them."""
        if portal.is_direct:
            raise NotSupported(
                "invite into a DM",
                user_message="A direct chat with an XMPP contact has room for two; "
                "bridge an XMPP room to talk with more people.",
            )
        _, _, resource = split_jid(user) if is_valid_jid(user) else (None, "", "?")
        if resource is not None:
            raise NotSupported(
                f"{user} is an occupant", user_message="Only XMPP addresses can be invited, "
                "not people known by their nickname in a room.",
            )  # fmt: skip
        if not self.limits.from_matrix.allow(inviter):
            raise NotSupported(
                "too many invitations", user_message="Too many invitations at once; try again "
                "in a few minutes.",
            )  # fmt: skip
        if self._outgoing is None:
            raise NotSupported("no outgoing invitations", user_message="People cannot be "
                               "invited into XMPP rooms from Matrix here.")  # fmt: skip
        await self._outgoing.invite(portal, inviter, bare_jid(user))
