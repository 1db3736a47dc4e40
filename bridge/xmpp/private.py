"""Private messages in MUCs (XEP-0045 §7.5): an occupant writes to a Matrix user's occupant.

Each conversation is a DM portal between the Matrix user and the occupant, keyed by the
occupant's address in the room (``room@service/nick``, see :func:`is_private`): that is where
answers go, as private messages from the Matrix user's own occupant (in a bridged MUC) or from
their nick (in a room the bridge hosts). What is said there comes from the same ghost as in the
room, the real JID when the room reveals it, else the occupant-id's, else the nick's, so one
person is one Matrix user however they write.

Only what a room relays counts: the room must be one the bridge is in, the recipient one of
its Matrix users' occupants there, the sender a current occupant who is not one of ours. The
bridge hosts the other rooms and checks their occupants itself. The portal is converted like
any other stored input (``inbound.PRIVATE``).

A nick is not a person: whoever holds it may leave and someone else take it. So the first
private message of a conversation that is kept (content, not a bare chat state or marker)
records who wrote it: their real JID and the room's occupant-id, whichever the room shows (see
:func:`identity_key`). From then on the conversation is with that person only, recognised by
either: a message from someone else under the nick is dropped, and so is one from a holder the
room no longer lets us tell apart (no JID, no occupant-id); an answer then is not delivered,
with a notice that the person left. A record lasts :data:`IDENTITY_DAYS` after the last kept
message (older ones count as absent; housekeeping deletes them, ``pm:`` is a kv marker). A
room that shows neither real JIDs nor occupant-ids gives nothing to tell people apart by;
there the nick is all there is.

A kept message that asks for a XEP-0184 receipt gets one, as in a DM: from the Matrix user's
occupant (or nick), once the message is stored; anything refused above gets none. A Matrix read
receipt goes back as a XEP-0333 marker the same way (:mod:`bridge.xmpp.chat_states`).

Nothing here answers a message a bridged MUC relayed with an error: the error would go to the
room, which may kick an occupant that sends errors to another (XEP-0045 §9.10, status 307).
It is logged and dropped. An answer from Matrix reaches a bridged MUC only while the Matrix
user is still joined to the room's portal: it would otherwise make their occupant join a room
they left, or were kicked or banned from, in Matrix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from slixmpp import Message

from bridge.core import ChatInfo, ConnectorContext, PermanentError, PortalKey, RemoteUserID
from bridge.core.federation import remote_domain
from bridge.core.remote_files import RemoteFiles
from bridge.portal.models import Portal
from bridge.xmpp.component import Component
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.hosted import HostedRooms
from bridge.xmpp.ids import NETWORK, dm_key, message_id, muc_key
from bridge.xmpp.inbound import PRIVATE, accept, as_is, remote_input, send_receipt
from bridge.xmpp.moderation import MucModeration, nick_ghost, occupant_ghost
from bridge.xmpp.muc import MucTracker
from bridge.xmpp.protocol.escaping import bare_jid, jid_to_mxid
from bridge.xmpp.to_matrix import MAX_BODY_BYTES, carries_content, convert, too_large

PuppetIn = Callable[[str, str, str], Awaitable[str]]
IDENTITY_PREFIX = "pm:"
Route = tuple[Component, str, str]
"""(component, from, to) of a private message."""
IDENTITY_DAYS = 30
"""A conversation's record of who the nick was expires this long after its last message."""
REFRESH_SECONDS = 86400.0
"""A kept record's time is rewritten at most this often (one write per day, not per message)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a nick, as far as the room lets us tell."""

    jid: str | None = None
    oid: str | None = None

    @property
    def known(self) -> bool:
        return bool(self.jid or self.oid)

    def matches(self, other: Holder) -> bool:
        return bool((self.jid and self.jid == other.jid) or (self.oid and self.oid == other.oid))


def _parse_record(value: str) -> tuple[Holder, float | None]:
    """A stored record: JSON ``{jid, oid, at}``, or an older bare ``jid:…``/``oid:…``."""
    if value.startswith("jid:"):
        return Holder(jid=value[4:]), None
    if value.startswith("oid:"):
        return Holder(oid=value[4:]), None
    try:
        data = json.loads(value)
        return Holder(data.get("jid"), data.get("oid")), float(data["at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return Holder(), None


def is_private(portal: Portal) -> bool:
    """Whether ``portal`` is a private conversation with a MUC occupant."""
    return portal.is_direct and "/" in portal.remote_id


def identity_key(occupant: str, mxid: str) -> str:
    """The store key of who ``room/nick`` was when the conversation with ``mxid`` began."""
    return f"{IDENTITY_PREFIX}{occupant} {mxid}"


class PrivateMessages:
    def __init__(self, ctx: ConnectorContext, cfg: XmppConfig, component: Component,
                 hosted: HostedRooms | None, mucs: MucTracker, moderation: MucModeration,
                 puppet_in: PuppetIn, files: RemoteFiles,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self._ctx = ctx
        self._clock = clock
        self._cfg = cfg
        self._component = component
        self._hosted = hosted
        self._mucs = mucs
        self._moderation = moderation
        self._puppet_in = puppet_in
        self._files = files
        self._log = ctx.log.getChild("private")

    def relayed(self, msg: Message) -> bool:
        """Whether ``msg`` comes from a bridged MUC (its occupant, or the room itself)."""
        return msg["type"] != "groupchat" and msg["from"].bare in self._mucs.rooms

    def _matrix_user(self, jid: str) -> str | None:
        mxid = jid_to_mxid(jid, self._cfg.jid) if jid != self._cfg.listener_jid else None
        return mxid if mxid is not None and self._ctx.parse_ghost_mxid(mxid) is None else None

    # --- XMPP → Matrix ----------------------------------------------------------------------------

    async def from_bridged(self, msg: Message) -> None:
        """A private message a bridged MUC relayed to a Matrix user's occupant."""
        room_jid, nick, to = msg["from"].bare, msg["from"].resource, str(msg["to"])
        room = self._mucs.rooms.get(room_jid)
        mxid = self._matrix_user(msg["to"].bare)
        if room is None or not nick or mxid is None or to not in room.nicks:
            # The room itself (a notice, a declined invitation), the listener, or an occupant
            # of ours the room no longer counts: nobody in Matrix to give it to.
            self._log.info("Dropped a %s message from %s to %s: not for a Matrix user's "
                           "occupant there", msg["type"] or "normal", msg["from"], to)  # fmt: skip
            return
        if nick not in room.occupants or room.is_ours(nick):
            self._log.info("Dropped a private message from %s: not an occupant of %s now",
                           msg["from"], room_jid)  # fmt: skip
            return
        real = room.occupants.get(nick)
        if refused := self._ctx.federation.refusal(
            NETWORK, remote_domain(real or room_jid), mxid, entry="xmpp private message"
        ):
            self._log.info("Dropped a private message from %s to %s: %s", msg["from"], mxid,
                           refused)  # fmt: skip
            return
        # The id the room gave the nick in its presence: a private message's own occupant-id
        # element is the sender's to write, where the room does not rewrite it.
        occupant_id = self._moderation.occupant_ids(room_jid).get(nick)
        by_id = occupant_ghost(room_jid, occupant_id) if occupant_id else None
        sender = RemoteUserID(real or by_id or nick_ghost(room_jid, nick))
        key, holder = f"{room_jid}/{nick}", self._bridged_identity(room_jid, nick)
        if not await self._same_person(key, mxid, holder):
            self._log.warning("Dropped a private message from %s to %s: someone else held the "
                              "nick when the conversation began", msg["from"], mxid)  # fmt: skip
            return
        if await self._take(msg, dm_key(key, mxid), sender, nick, self._component, relayed=True):
            await self._record(key, mxid, holder)

    async def from_hosted(self, msg: Message) -> None:
        """An occupant of a room the bridge hosts wrote to ``room/nick`` privately. The bridge
        is the room here, so refusals are answered with errors."""
        hosted = self._hosted
        assert hosted is not None
        room, target, occupant = msg["to"].bare, msg["to"].resource, str(msg["from"])
        component = hosted.component
        nicks = [n for n, jid in hosted.occupant_nicks(room).items() if jid == occupant]
        if not nicks:
            component.reply_error(msg, "not-acceptable", "Join the room before writing "
                                  "privately to its members", "modify")  # fmt: skip
            return
        matches = [m for m, n in hosted.members(room).items() if n == target]
        if not matches:
            if target in hosted.occupant_nicks(room):
                component.reply_error(msg, "feature-not-implemented", f"{target} is on XMPP "
                                      "too: private messages between XMPP occupants of this "
                                      "room are not relayed; write to them directly")  # fmt: skip
            else:
                component.reply_error(msg, "item-not-found", f"No Matrix member {target} in "
                                      "this room")  # fmt: skip
            return
        if len(matches) > 1:
            component.reply_error(msg, "conflict", f"Several Matrix members of this room are "
                                  f"called {target}, so a private message could reach the wrong "
                                  "one; write in the room instead", "cancel")  # fmt: skip
            return
        mxid = matches[0]
        if self._ctx.federation.refusal(NETWORK, remote_domain(occupant), mxid,
                                        entry="xmpp private message"):  # fmt: skip
            component.reply_error(msg, "forbidden", f"{target} cannot be reached privately "
                                  "from your server", "auth")  # fmt: skip
            return
        key, holder = f"{room}/{nicks[0]}", Holder(jid=bare_jid(occupant).lower())
        if not await self._same_person(key, mxid, holder):
            component.reply_error(msg, "conflict", f"{target} had a private conversation with "
                                  f"someone else under the nick {nicks[0]}; join under another "
                                  "nick to write to them privately", "cancel")  # fmt: skip
            return
        if await self._take(msg, dm_key(key, mxid), RemoteUserID(bare_jid(occupant)),
                            nicks[0], component):  # fmt: skip
            await self._record(key, mxid, holder)

    def _bridged_identity(self, room: str, nick: str) -> Holder:
        """Who holds ``nick`` in bridged ``room`` now, where the room lets us tell."""
        tracked = self._mucs.rooms.get(room)
        real = tracked.occupants.get(nick) if tracked is not None else None
        return Holder(real or None, self._moderation.occupant_ids(room).get(nick) or None)

    async def _known(self, occupant: str, mxid: str) -> tuple[Holder | None, float | None]:
        """Who ``mxid``'s conversation with ``occupant`` is with (None: nobody on record, or
        the record expired), and when that was last written."""
        value = await self._ctx.store.kv_get(identity_key(occupant, mxid))
        if value is None:
            return None, None
        known, at = _parse_record(value)
        if at is not None and self._clock() - at > IDENTITY_DAYS * 86400:
            return None, None
        return (known if known.known else None), at

    async def _same_person(self, occupant: str, mxid: str, who: Holder) -> bool:
        """Whether ``who`` is the person ``mxid``'s conversation with ``occupant`` is with.
        Nobody on record: anyone (the first kept message records them, :meth:`_record`)."""
        known, _ = await self._known(occupant, mxid)
        return known is None or known.matches(who)

    async def _record(self, occupant: str, mxid: str, who: Holder) -> None:
        """``who`` wrote to ``mxid`` as ``occupant`` and it was kept: they are the person of
        the conversation (refreshed at most daily, adding what the room shows now)."""
        if not who.known:
            return  # nothing to tell people apart by
        known, at = await self._known(occupant, mxid)
        now = self._clock()
        if known is not None:
            merged = Holder(known.jid or who.jid, known.oid or who.oid)
            if merged == known and at is not None and now - at < REFRESH_SECONDS:
                return
            who = merged
        value = json.dumps({"jid": who.jid, "oid": who.oid, "at": now})
        await self._ctx.store.kv_set(identity_key(occupant, mxid), value)

    async def _take(self, msg: Message, key: PortalKey, sender: RemoteUserID, nick: str,
                    component: Component, *, relayed: bool = False) -> bool:  # fmt: skip
        """``relayed``: a bridged MUC relayed ``msg``, which gets no error back. True when
        content was kept (a conversation began or went on), not for chat states/markers."""
        if too_large(msg):
            if relayed:
                self._log.warning("Dropped a private message from %s: over %d bytes",
                                  msg["from"], MAX_BODY_BYTES)  # fmt: skip
                return False
            component.reply_error(msg, "not-acceptable", f"Messages to Matrix are limited to "
                                  f"{MAX_BODY_BYTES} bytes", "modify")  # fmt: skip
            return False
        if carries_content(msg):
            item = remote_input(key, PRIVATE, msg, dedupe=f"{key.remote_id}:{message_id(msg)}",
                                sender=sender, name=nick)  # fmt: skip
            if not await accept(self._ctx, component, msg, item, relayed=relayed):
                return False
            send_receipt(component, msg)  # as in a DM (a room relays it to the occupant)
            return True
        info = ChatInfo(is_direct=True, matrix_users=[key.receiver], members=[sender])
        event = await convert(msg, key=key, sender=sender, sender_name=nick, chat_info=info,
                              resolve=as_is, files=self._files)  # fmt: skip
        if event is not None:
            event.create_portal = False  # a chat state or marker starts no conversation
            await self._ctx.queue_remote_event(event)
        return False

    # --- Matrix → XMPP ----------------------------------------------------------------------------

    async def route(self, portal: Portal, mxid: str, name: str, *, join: bool = True) -> Route:
        """How ``mxid`` writes privately to the occupant of ``portal``; ``join``: their
        occupant joins the bridged MUC first if it is not there (after a restart)."""
        room, nick = portal.remote_id.split("/", 1)
        hosted = self._hosted
        if hosted is not None and hosted.hosts(room):
            occupant = hosted.occupant_nicks(room).get(nick)
            ours = hosted.nick_of(room, mxid)
            if occupant is None or ours is None:
                raise self._gone(room, nick)
            if [m for m, n in hosted.members(room).items() if n == ours] != [mxid]:
                raise PermanentError(
                    f"{ours} is not unique in {room}",
                    user_message=f"Another Matrix member of {room} has the name {ours}, so "
                    f"{nick} could not tell who wrote; this private message was not delivered. "
                    "Change your display name in the room to write privately.",
                )
            await self._check_holder(portal.remote_id, mxid, Holder(bare_jid(occupant).lower()))
            return hosted.component, f"{room}/{ours}", occupant
        tracked = self._mucs.rooms.get(room)
        if tracked is None or nick not in tracked.occupants or tracked.is_ours(nick):
            raise self._gone(room, nick)
        await self._check_holder(portal.remote_id, mxid, self._bridged_identity(room, nick))
        full = None
        if join:
            await self._check_member(room, mxid)
            full = await self._puppet_in(room, mxid, name)
        if full is None:
            full = next((f for f in tracked.nicks if jid_to_mxid(f.split("/")[0], self._cfg.jid)
                         == mxid), None)  # fmt: skip
            if full is None:
                raise self._gone(room, nick)
        return self._component, full, portal.remote_id

    async def _check_holder(self, occupant: str, mxid: str, who: Holder) -> None:
        """Refuses an answer while someone other than the person on record holds the nick,
        including a holder the room no longer lets us tell apart."""
        if not await self._same_person(occupant, mxid, who):
            room, nick = occupant.split("/", 1)
            raise PermanentError(
                f"{occupant} is someone else now",
                user_message=f"The {nick} you were writing to left {room}, and someone else "
                "uses that nick now, so this private message was not delivered.",
            )

    async def _check_member(self, room: str, mxid: str) -> None:
        """``mxid`` must still be joined to the room's portal in Matrix: answering privately
        would otherwise bring their occupant back into a room they left or were removed from."""
        portal = await self._ctx.store.get_portal(muc_key(room).remote_id)
        joined = portal is not None and portal.mxid is not None and (
            await self._ctx.matrix_membership(portal.mxid, mxid) == "join")  # fmt: skip
        if not joined:
            raise PermanentError(
                f"{mxid} is not in the portal of {room}",
                user_message=f"You are no longer in {room} in Matrix, so this private message "
                "was not delivered.",
            )

    @staticmethod
    def _gone(room: str, nick: str) -> PermanentError:
        return PermanentError(
            f"{nick} is not in {room}",
            user_message=f"{nick} is not in {room} now, so this private message was not "
            "delivered; write in the room instead.",
        )
