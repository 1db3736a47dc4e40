"""XMPP → Matrix: what arrives on the component, kept durably before it is acknowledged.

A stanza that makes Matrix content (a message, file, correction, retraction or reaction) is
handed to the core's remote inbox (``ctx.accept_remote``) as its XML, with what only the moment
of arrival knows (who is behind a MUC nick, when it came). Only then is a requested XEP-0184
receipt sent; if the store is unreachable the sender gets an error of type ``wait`` instead, so
nothing vanishes silently. :meth:`Inbound.convert` rebuilds the event from the stored stanza
inside the portal's ordered queue, now or again after a restart, and does the lookups there.
Chat states and markers are fleeting: converted and queued at once.

In a bridged MUC every message taken moves the room's archive mark (the last stanza-id, see
:mod:`bridge.xmpp.mam`); while the bridge catches up on a room's archive, live messages of that
room are held (:meth:`Inbound.hold`) and follow the archived ones, minus those the archive gave.
"""

from __future__ import annotations

import time
from typing import Any

from slixmpp import Message

from bridge.core import (
    ChatInfo,
    ConnectorContext,
    PermanentError,
    PortalKey,
    RemoteEvent,
    RemoteMessageID,
    RemoteRedaction,
    RemoteUserID,
)
from bridge.core.federation import remote_domain
from bridge.core.remote_files import RemoteFiles
from bridge.portal.models import RemoteInput
from bridge.xmpp.component import Component
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.ids import (
    NETWORK,
    dm_key,
    message_id,
    muc_key,
    reverse_stanza_id_key,
    stanza_id_key,
)
from bridge.xmpp.marks import ArchiveMarks
from bridge.xmpp.moderation import (
    MucModeration,
    announced_moderation,
    nick_ghost,
    stanza_real_jid,
    take_subject,
)
from bridge.xmpp.muc import MucTracker, vouched_by_room
from bridge.xmpp.protocol.escaping import bare_jid, jid_to_mxid
from bridge.xmpp.store import ArchiveMark, XmppStore
from bridge.xmpp.to_matrix import (
    MAX_BODY_BYTES,
    ResolveId,
    carries_content,
    convert,
    parse_stanza,
    stanza_xml,
    too_large,
)

DM = "chat"
"""``RemoteInput.kind`` of a message in a DM; the sender is the portal's remote id."""
MUC = "groupchat"
"""… in a bridged MUC, as the listener got it; ``payload`` has ``sender`` and ``name``."""
HOSTED = "hosted"
"""… in a room the bridge hosts; ``payload`` has ``sender`` and ``name``."""
PRIVATE = "private"
"""… a private message from a MUC occupant (:mod:`bridge.xmpp.private`); the portal is a DM
keyed by ``room/nick``, ``payload`` has ``sender`` (its ghost) and ``name``."""
MODERATED = "moderated"
"""A bridged MUC announced that a moderator removed a message (XEP-0425); ``payload`` has
``target``, the id the room knows it by."""
RECEIPTS_NS = "urn:xmpp:receipts"
DELAY_NS = "urn:xmpp:delay"
OUR_PREFIX = "pontis-"
"""Ids of stanzas the bridge sends for Matrix events (:func:`bridge.xmpp.ids.outgoing_id`)."""


def remote_input(
    key: PortalKey, kind: str, msg: Message, *, dedupe: str, sender: str = "", name: str = ""
) -> RemoteInput:
    payload: dict[str, Any] = {"xml": stanza_xml(msg), "received": int(time.time() * 1000)}
    if sender:
        payload["sender"], payload["name"] = sender, name
    return RemoteInput(portal=key, kind=kind, payload=payload, dedupe_id=dedupe or None)


async def accept(ctx: ConnectorContext, component: Component, msg: Message,
                 item: RemoteInput, *, relayed: bool = False) -> bool:  # fmt: skip
    """Keep ``item`` durably; False if that failed, after telling the sender to try again.

    A message a MUC relayed to the bridge's occupant gets no error back: it would go to the
    room, which may remove an occupant that answers with errors (XEP-0045 §9.10), and its
    sender never hears of it anyway. It is logged with its stanza id instead; so is a private
    message a MUC relayed (``relayed``), for the same reason."""
    try:
        await ctx.accept_remote(item)
    except Exception as err:
        if msg["type"] == "groupchat" or relayed:
            ctx.log.error("Could not keep %s %s from %s (%s); it is not bridged",
                          item.kind, item.dedupe_id, msg["from"], err)  # fmt: skip
            return False
        ctx.log.error("Could not keep %s %s from %s (%s); the sender is asked to try again",
                      item.kind, item.dedupe_id, msg["from"], err)  # fmt: skip
        component.reply_error(msg, "resource-constraint",
                              "The bridge cannot take messages right now; send it again later.",
                              "wait")  # fmt: skip
        return False
    return True


def send_receipt(component: Component, msg: Message) -> None:
    """XEP-0184: confirm ``msg`` if it asks for it. Called once it is kept (``accept``): it
    reaches Matrix whatever happens now. From whom it was sent to, on the component it came
    through (a Matrix user's JID, their occupant, their nick in a room the bridge hosts)."""
    if msg.xml.find(f"{{{RECEIPTS_NS}}}request") is None or not msg["id"] or not component.up:
        return
    receipt = component.xmpp.make_message(mto=msg["from"], mfrom=msg["to"], mtype="chat")
    receipt["receipt"] = msg["id"]
    receipt.send()


class Inbound:
    def __init__(
        self,
        ctx: ConnectorContext,
        cfg: XmppConfig,
        component: Component,
        mucs: MucTracker,
        store: XmppStore,
        files: RemoteFiles | None = None,
    ) -> None:
        self._ctx = ctx
        self._store = store
        self.marks = ArchiveMarks(store, ctx.log)
        """How far the bridge got in each bridged MUC's archive, written together."""
        self._held: dict[str, list[Message]] = {}
        """room → live messages that came while its archive was being caught up on."""
        self._taken: dict[str, set[str]] = {}
        """room → stanza-ids taken from its archive in the catch-up under way."""
        self._behind: set[str] = set()
        """Rooms whose last catch-up failed: their archive mark stays where it was, so that the
        next gap (rejoin, reconnect, restart) catches up on what was missed as well."""
        self._lost: set[str] = set()
        """Rooms where a message could not be kept since their last catch-up began."""
        self._cfg = cfg
        self._files = files or RemoteFiles(cfg.fetch_allow_private, cfg.max_file_bytes)
        self._component = component
        self._mucs = mucs
        self._log = ctx.log
        self.moderation: MucModeration | None = None
        """Set by the client: occupant-ids the rooms vouch for (XEP-0421)."""

    # --- on arrival -------------------------------------------------------------------------------

    async def direct(self, msg: Message) -> None:
        if too_large(msg):
            self._component.reply_error(
                msg, "not-acceptable", f"Messages to Matrix are limited to {MAX_BODY_BYTES} bytes"
            )
            return
        sender = bare_jid(str(msg["from"]))
        mxid = jid_to_mxid(msg["to"].bare, self._cfg.jid)
        if mxid is not None and self._ctx.parse_ghost_mxid(mxid) is not None:
            mxid = None  # an XMPP person's own ghost: writing to it would loop back to XMPP
        if mxid is None:
            if msg["to"].user:
                self._component.reply_error(msg, "item-not-found", "No such Matrix user")
            return
        if refused := self._ctx.federation.refusal(
            NETWORK, remote_domain(sender), mxid, entry="xmpp direct message"
        ):
            if carries_content(msg):  # chat states and markers are dropped without a word
                self._component.reply_error(msg, "forbidden", f"Not delivered: refused by the "
                                            f"hub's federation policy: {refused}.", "auth")  # fmt: skip
            return
        key = dm_key(sender, mxid)
        if not carries_content(msg):
            await self._fleeting(msg, key, RemoteUserID(sender), None)
            return
        item = remote_input(key, DM, msg, dedupe=message_id(msg))
        if not await accept(self._ctx, self._component, msg, item):
            return
        send_receipt(self._component, msg)

    async def groupchat(self, msg: Message) -> None:
        """A live message from a MUC; held while the room's archive is being caught up on, so
        that Matrix sees the room's messages in the room's order."""
        if str(msg["to"]).split("/")[0] != self._cfg.listener_jid:
            return  # every occupant of ours gets a copy; the listener's is the one we bridge
        room_jid = msg["from"].bare
        if room_jid not in self._mucs.rooms and room_jid not in self._held:
            # Not a room the listener joined (or is rejoining): a stranger's "groupchat" is
            # nobody's to bridge, and must not make rooms, keys or marks.
            self._log.debug("Dropped a groupchat message from %s: not a room we are in",
                            msg["from"])  # fmt: skip
            return
        held = self._held.get(room_jid)
        if held is not None:
            held.append(msg)
            return
        await self._groupchat(msg, room_jid)

    async def archived(self, room_jid: str, msg: Message) -> None:
        """A message from the room's archive (:mod:`bridge.xmpp.mam`), taken once."""
        stanza_id = msg["stanza_id"]["id"]
        taken = self._taken.setdefault(room_jid, set())
        if stanza_id in taken or await self._ctx.store.kv_get(stanza_id_key(room_jid, stanza_id)):
            return  # replayed, or bridged before the gap
        taken.add(stanza_id)
        if message_id(msg).startswith(OUR_PREFIX):
            # What a Matrix user said, reflected: only its stanza-id matters (for references).
            await self._remember_stanza_id(msg, room_jid)
            return
        await self._groupchat(msg, room_jid, mark=False, archived=True)

    def hold(self, room_jid: str) -> None:
        """Keep live messages of ``room_jid`` aside until :meth:`release`."""
        self._held.setdefault(room_jid, [])
        self._taken[room_jid] = set()
        self._lost.discard(room_jid)  # the catch-up brings what was lost before it

    async def release(self, room_jid: str, *, caught_up: bool = True) -> None:
        """Hand on the live messages held while catching up, minus those the archive gave.
        ``caught_up`` False: the catch-up failed, and the room's mark must not move on."""
        if caught_up and room_jid not in self._lost:
            self._behind.discard(room_jid)
        else:
            self._behind.add(room_jid)
        held = self._held.get(room_jid, [])
        taken = self._taken.get(room_jid, set())
        try:
            while held:
                msg = held.pop(0)
                stanza_id = msg["stanza_id"]["id"] if msg["stanza_id"]["by"] == room_jid else ""
                if not stanza_id or stanza_id not in taken:
                    await self._groupchat(msg, room_jid)
        except BaseException:
            # The rest are not taken now: the mark stays where it was, so that the next
            # catch-up brings them from the archive.
            self._behind.add(room_jid)
            raise
        finally:
            self._held.pop(room_jid, None)
            self._taken.pop(room_jid, None)
            self._lost.discard(room_jid)

    def set_mark(self, room_jid: str, stanza_id: str) -> None:
        """Remember how far the bridge got in ``room_jid``'s archive."""
        self.marks.move(room_jid, ArchiveMark(stanza_id, int(time.time() * 1000)))

    async def _groupchat(self, msg: Message, room_jid: str, *, mark: bool = True,
                         archived: bool = False) -> None:  # fmt: skip
        if not await self._take_groupchat(msg, room_jid, archived=archived):
            # Not kept (the store is down): the mark stays before it, and the next catch-up
            # brings it from the archive.
            self._behind.add(room_jid)
            self._lost.add(room_jid)
        stanza_id = msg["stanza_id"]["id"] if msg["stanza_id"]["by"] == room_jid else ""
        if mark and room_jid not in self._behind and (stanza_id or carries_content(msg)):
            # Without ids, the time still counts.
            self.set_mark(room_jid, stanza_id)

    async def _take_groupchat(self, msg: Message, room_jid: str, *, archived: bool) -> bool:
        """False if content to bridge could not be kept."""
        nick = msg["from"].resource
        room = self._mucs.room(room_jid)
        if msg["subject"] and not msg["body"]:  # from an occupant, or the room on every join
            room.subject = msg["subject"]
            await take_subject(self._ctx, room_jid, msg["subject"])
            return True
        if (target := announced_moderation(msg, room_jid)) is not None:
            room_id = msg["stanza_id"]["id"] if msg["stanza_id"]["by"] == room_jid else ""
            item = remote_input(muc_key(room_jid), MODERATED, msg,
                                dedupe=room_id or f"moderated:{target}")  # fmt: skip
            item.payload["target"] = target
            return await accept(self._ctx, self._component, msg, item)
        bridged = bool(nick) and not room.is_ours(nick)
        if not bridged or not carries_content(msg) or too_large(msg):
            # Not content of an XMPP person (our own reflection, the room's, a chat state): its
            # stanza-id now, as XMPP replies and reactions to what Matrix users said use it.
            await self._remember_stanza_id(msg, room_jid)
        if not bridged:
            return True
        if too_large(msg):
            self._log.warning("Dropped a %d-byte message from %s: too large for Matrix",
                              len(msg["body"]), msg["from"])  # fmt: skip
            return True
        key = muc_key(room_jid)
        sender = self._sender(msg, room_jid, nick, archived=archived)
        if not carries_content(msg):
            await self._fleeting(msg, key, RemoteUserID(sender), nick)
            return True
        room_id = msg["stanza_id"]["id"] if msg["stanza_id"]["by"] == room_jid else ""
        dedupe = room_id or f"{nick}:{message_id(msg)}"
        item = remote_input(key, MUC, msg, dedupe=dedupe, sender=sender, name=nick)
        return await accept(self._ctx, self._component, msg, item)

    def _sender(self, msg: Message, room_jid: str, nick: str, *, archived: bool) -> str:
        """Who wrote ``msg``: real JID, else occupant-id ghost, else the nick's ghost. What is
        archived or delayed is told only by the stanza itself: today's holder of a nick (and
        its id) may be someone else than who held it then."""
        live = not archived and msg.xml.find(f"{{{DELAY_NS}}}delay") is None
        by_id = (
            self.moderation.sender_of(room_jid, nick, msg, live=live) if self.moderation else None
        )
        real = self._mucs.room(room_jid).occupants.get(nick) if live else stanza_real_jid(msg)
        if real and not vouched_by_room(room_jid, real):
            real = None  # the room cannot speak for that server's people (muc.vouched_by_room)
        return real or by_id or nick_ghost(room_jid, nick)

    async def _fleeting(
        self, msg: Message, key: PortalKey, sender: RemoteUserID, name: str | None
    ) -> None:
        event = await self._event(msg, key, sender, name, self._resolver(key), None)
        if event is not None:
            await self._ctx.queue_remote_event(event)

    # --- in the portal's queue --------------------------------------------------------------------

    async def convert(self, item: RemoteInput) -> list[RemoteEvent]:
        """The events of a stored stanza (``XmppClient.convert_remote``); the same every time."""
        msg = parse_stanza(self._component.xmpp, str(item.payload["xml"]))
        key, received = item.portal, item.payload.get("received")
        if item.kind == DM:
            sender, name = RemoteUserID(key.remote_id), None
            resolve = self._resolver(key)
        elif item.kind in (MUC, HOSTED):
            sender, name = RemoteUserID(item.payload["sender"]), item.payload.get("name")
            if item.kind == MUC:
                await self._remember_stanza_id(msg, key.remote_id)
                resolve = self._resolver(key)
            else:
                resolve = as_is  # in hosted rooms every id is one we handed out
        elif item.kind == PRIVATE:
            sender, name = RemoteUserID(item.payload["sender"]), item.payload.get("name")
            resolve = as_is
        elif item.kind == MODERATED:
            target = await self._resolver(key)(str(item.payload["target"]))
            return [RemoteRedaction(portal=key, target=target, create_portal=False)]
        else:
            raise PermanentError(f"unknown stored XMPP input {item.kind!r}")
        event = await self._event(msg, key, sender, name, resolve, received)
        if (isinstance(event, RemoteRedaction) and item.kind in (MUC, HOSTED)
                and not await self._authored(key, event)):  # fmt: skip
            return []
        return [] if event is None else [event]

    async def _authored(self, key: PortalKey, retraction: RemoteRedaction) -> bool:
        """Whether a retraction in a MUC is its author's: anyone else's (a "moderation" an
        occupant wrote itself, a guessed id) changes nothing."""
        target = await self._ctx.store.get_message(key.remote_id, retraction.target)
        if target is None or target.sender_id == retraction.sender:
            return True  # unknown: the core finds nothing to redact either
        self._log.warning("Ignored a retraction by %s of %s's message %s in %s: only its "
                          "author or the room's moderators may remove it", retraction.sender,
                          target.sender_id, retraction.target, key.remote_id)  # fmt: skip
        return False

    async def _event(self, msg: Message, key: PortalKey, sender: RemoteUserID, name: str | None,
                     resolve: ResolveId, received: int | None) -> RemoteEvent | None:  # fmt: skip
        info = None
        if key.receiver:
            info = ChatInfo(is_direct=True, matrix_users=[key.receiver], members=[sender])
        return await convert(
            msg, key=key, sender=sender, sender_name=name, chat_info=info, resolve=resolve,
            files=self._files, received=received,
        )  # fmt: skip

    async def _remember_stanza_id(self, msg: Message, room: str) -> None:
        """The room's stanza-id of ``msg`` ↔ our id of it, both ways. The first mapping wins:
        our id is the origin-id the sender chose, and anyone can copy someone else's; letting a
        later message take it over would aim redactions, moderation and replies at the copy."""
        if msg["stanza_id"]["by"] != room or not msg["stanza_id"]["id"]:
            return
        stanza_id, ours = msg["stanza_id"]["id"], message_id(msg)
        known = await self._ctx.store.kv_get(reverse_stanza_id_key(room, ours))
        if known and known != stanza_id:
            self._log.warning("Ignored %s's stanza-id %s in %s: id %s already belongs to %s",
                              msg["from"], stanza_id, room, ours, known)  # fmt: skip
            return
        await self._ctx.store.kv_set(stanza_id_key(room, stanza_id), ours)
        await self._ctx.store.kv_set(reverse_stanza_id_key(room, ours), stanza_id)

    def _resolver(self, key: PortalKey) -> ResolveId:
        async def resolve(ref: str) -> RemoteMessageID:
            if not key.receiver:  # MUC: references may use the room's stanza-id
                mapped = await self._ctx.store.kv_get(stanza_id_key(key.remote_id, ref))
                if mapped:
                    return RemoteMessageID(mapped)
            return RemoteMessageID(ref)

        return resolve


async def as_is(ref: str) -> RemoteMessageID:
    return RemoteMessageID(ref)
