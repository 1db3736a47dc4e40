"""The XMPP component as the one client that serves every Matrix user.

Matrix users speak as their own JIDs on the component domain; XMPP people become ghosts. DMs
are portals per (XMPP user, Matrix user); bridged MUCs are joined by a listener, and a Matrix
user who speaks there joins as their own occupant.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from copy import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from slixmpp import JID, Message, Presence

from bridge.core import (
    ChatInfo,
    ConnectorContext,
    LoginID,
    MatrixEdit,
    MatrixKick,
    MatrixMembership,
    MatrixMessage,
    MatrixReaction,
    MatrixReactionRemove,
    MatrixReceipt,
    MatrixRedaction,
    MatrixTyping,
    NotFound,
    PermanentError,
    PortalKey,
    RemoteEvent,
    RemoteMessageID,
    RemoteUserID,
    TransientError,
    UserInfo,
)
from bridge.core.remote_files import RemoteFiles
from bridge.portal.models import Message as StoredMessage
from bridge.portal.models import Portal, RemoteInput
from bridge.xmpp import from_matrix
from bridge.xmpp.component import Component, Stanza
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.hosted import HostedRooms
from bridge.xmpp.identity import Identity
from bridge.xmpp.ids import (
    dm_key,
    muc_key,
    outgoing_id,
    reverse_stanza_id_key,
)
from bridge.xmpp.inbound import Inbound
from bridge.xmpp.mam import CLOCK_MARGIN_MS, Archive
from bridge.xmpp.moderation import MucModeration, subject_key
from bridge.xmpp.moderator import MatrixModerator
from bridge.xmpp.muc import MUC_NS, JoinError, MucTracker
from bridge.xmpp.muc_presence import MucKeeper, rejoin_delay
from bridge.xmpp.protocol.escaping import (
    bare_jid,
    is_valid_jid,
    jid_to_mxid,
    mxid_to_jid,
    split_jid,
)
from bridge.xmpp.store import ArchiveMark, XmppStore
from bridge.xmpp.upload import upload
from bridge.xmpp.vcards import fetch_vcard

JOIN_TIMEOUT = 15
MAX_RESENDS = 3
TRACKED_STANZAS = 2000
MAX_REJOIN_RETRIES = 12
"""Rejoins tried again after an unexpected failure (a store outage): about an hour in all."""
MessageType = Literal["chat", "groupchat"]


@dataclass(slots=True)
class _Sent:
    """A stanza we sent for a Matrix event, kept in case the network bounces it."""

    event_id: str
    stanza: Message
    component: Component
    attempts: int = 0


class XmppClient:
    login_id = LoginID("")

    def __init__(self, ctx: ConnectorContext, cfg: XmppConfig, store: XmppStore) -> None:
        self._ctx = ctx
        self._cfg = cfg
        self._store = store
        self._log = ctx.log
        self.mucs = MucTracker()
        self.component = Component(
            cfg.jid, cfg, ctx.log, on_stanza=self._on_stanza, on_state=self._on_state
        )
        self.identity = Identity(self.component.xmpp, cfg, ctx)
        # Downloads of links from XMPP, under the address policy and size cap (closed on stop).
        self.files = RemoteFiles(cfg.fetch_allow_private, cfg.max_file_bytes)
        self.hosted = HostedRooms(cfg, ctx, store, self.files) if cfg.rooms_domain else None
        self.inbound = Inbound(ctx, cfg, self.component, self.mucs, store, self.files)
        self.archive = Archive(self.component, f"{cfg.listener_jid}/pontis", ctx.log,
                               self.inbound.archived)  # fmt: skip
        self.component.on_archive_result = self.archive.on_result
        self._sent: OrderedDict[str, _Sent] = OrderedDict()
        self.keeper = MucKeeper(ctx, self.component, self.mucs, f"{cfg.listener_jid}/pontis",
                                self._join_listener, cfg.self_ping_minutes)  # fmt: skip
        self.moderation = MucModeration(ctx, f"{cfg.listener_jid}/pontis", self._puppet_mxid,
                                        self.mucs)  # fmt: skip
        self.inbound.moderation = self.moderation
        self.moderator = MatrixModerator(ctx, self.component, self.hosted, self.mucs,
                                         self.moderation, self._puppet_in)  # fmt: skip

    def _puppet_mxid(self, jid: str) -> str | None:
        """The Matrix user whose occupant ``jid`` (bare) is, if it is one of ours."""
        mxid = jid_to_mxid(jid, self._cfg.jid) if jid != self._cfg.listener_jid else None
        return mxid if mxid is not None and self._ctx.parse_ghost_mxid(mxid) is None else None

    # --- connection -------------------------------------------------------------------------------

    async def connect(self) -> None:
        if self.hosted is not None:
            await self.hosted.load()
            self.hosted.component.start()
        await self._hold_bridged_mucs()
        self.component.start()
        self.keeper.start()

    async def disconnect(self) -> None:
        await self.component.stop()
        await self.inbound.marks.close()
        if self.hosted is not None:
            await self.hosted.component.stop()
        await self.files.close()

    async def _on_state(self, up: bool, message: str) -> None:
        self._ctx.set_client_state(self.login_id, connected=up, message=message)
        if not up:
            self.mucs.forget_all()
            self.moderation.forget_all()
            return
        # MUCs drop our occupants while we are away (status 333): rejoin and catch up from the
        # room's archive; messages already bridged are recognised by their ids. Rooms we host
        # are ours: joining them as an occupant would echo them into themselves.
        for room in await self._hold_bridged_mucs():
            self._ctx.background(self._rejoin(room), name=f"rejoin {room}")

    async def _hold_bridged_mucs(self) -> list[str]:
        """Hold the live messages of every bridged MUC until its rejoin has caught up. A server
        may still count our occupant in after a gap (ejabberd does across a component reconnect)
        and send live messages before we rejoin: taken at once, they would overtake the
        archive and move the room's mark past what we missed."""
        rooms: list[str] = [p.remote_id for p in await self._ctx.store.list_portals()
                 if not p.is_direct and not self._hosts(p.remote_id)]  # fmt: skip
        for room in rooms:
            self.mucs.room(room)  # a portal's room is ours to hear, rejoined yet or not
            self.inbound.hold(room)
        return rooms

    async def _rejoin(self, room: str, attempt: int = 0) -> None:
        if self.keeper.rejoining(room):
            return  # the keeper's loop is on it, and tells Matrix when the room is back
        try:
            await self._join_listener(room)
        except Exception as err:
            # Whatever failed (the room, the stream, our store), the room is released, its mark
            # stays put, and the rejoin is tried again later: nothing is held for ever.
            self._log.error(
                "Could not rejoin %s: %s; its messages are not bridged until it works", room, err
            )
            try:
                await self.inbound.release(room, caught_up=False)
            finally:
                if not isinstance(err, JoinError | TransientError):  # refused / reconnect rejoins
                    self._ctx.background(self._rejoin_later(room, attempt + 1),
                                         name=f"rejoin {room} again")  # fmt: skip

    async def _rejoin_later(self, room: str, attempt: int) -> None:
        await asyncio.sleep(rejoin_delay(attempt))
        if self.component.up and attempt <= MAX_REJOIN_RETRIES:
            self.inbound.hold(room)
            await self._rejoin(room, attempt)

    def _hosts(self, room: str) -> bool:
        return self.hosted is not None and self.hosted.hosts(room)

    async def _join_listener(self, room: str) -> str:
        """(Re)join ``room`` after a gap and catch up on what the bridge missed: from the
        room's archive (XEP-0313) when it has one, joining without history so nothing comes
        twice; else from the MUC history since the bridge last heard from the room."""
        if self._hosts(room):
            raise JoinError(room, "not-allowed", "the bridge hosts this room itself")
        self.component.require_up()
        mark = await self.inbound.marks.get(room)
        if mark is None or not await self.archive.has_mam(room):
            full = await self._join(
                room, self._cfg.listener_jid, self._cfg.muc_nick,
                history=self._cfg.history_on_join if mark is None else None,
                since=mark.seen_at - CLOCK_MARGIN_MS if mark is not None else None,
            )  # fmt: skip
            await self.inbound.release(room)  # the history is all there is: the mark may move
            return full
        self.inbound.hold(room)
        caught_up = False
        try:
            full = await self._join(room, self._cfg.listener_jid, self._cfg.muc_nick, history=0)
            try:
                await self.archive.catch_up(room, mark)
                caught_up = True
            except Exception as err:  # the archive or our store: the join itself worked
                self._log.error("Catching up on %s failed (%s): messages sent while the bridge "
                                "was away are missing in Matrix until the next rejoin or restart "
                                "catches up on them", room, err)  # fmt: skip
        finally:
            await self.inbound.release(room, caught_up=caught_up)
        return full

    async def _join(self, room: str, our_jid: str, nick: str, *, history: int | None = 0,
                    since: int | None = None) -> str:  # fmt: skip
        """Join ``room`` as ``our_jid``/``nick``; returns the full JID we joined with.
        ``history``: at most that many messages of MUC history, ``since``: those after that
        time (ms); neither: what the room gives by default."""
        self.component.require_up()
        full = f"{our_jid}/pontis"
        tracked = self.mucs.room(room)
        if full in tracked.nicks:
            return full
        presence = self.component.xmpp.make_presence(pto=f"{room}/{nick}", pfrom=full)
        x = presence.xml.makeelement(f"{{{MUC_NS}}}x", {})
        limits = {} if history is None else {"maxstanzas": str(history)}
        if since is not None:
            limits["since"] = datetime.fromtimestamp(since / 1000, tz=UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
        x.append(x.makeelement(f"{{{MUC_NS}}}history", limits))
        presence.xml.append(x)
        joined = self.mucs.expect_join(room, full)
        self.component.send(presence)
        await asyncio.wait_for(joined, JOIN_TIMEOUT)
        return full

    async def _puppet_in(self, room: str, mxid: str, name: str) -> str:
        """The full JID of ``mxid``'s occupant in ``room``, joining on first use."""
        if refused := self.moderation.refusal(room, mxid):
            raise refused
        jid = mxid_to_jid(mxid, self._cfg.jid)
        for nick in (name, f"{name} [matrix]", f"{name} [{mxid}]"):
            try:
                return await self._join(room, jid, nick)
            except JoinError as err:
                if not self.component.up:  # the stream dropped while we waited for the room
                    raise TransientError(f"joining {room}: {err}") from err
                if err.condition != "conflict":
                    raise PermanentError(
                        str(err), user_message=f"Could not join {room}: {err.condition}."
                    ) from err
                self._log.info("Nick %r taken in %s; trying another", nick, room)
        raise PermanentError(
            f"no free nick for {mxid} in {room}", user_message="Your name is taken in that room."
        )

    # --- XMPP → Matrix ----------------------------------------------------------------------------

    async def _on_stanza(self, stanza: Stanza) -> None:
        if isinstance(stanza, Presence):
            self.keeper.on_presence(stanza)  # first: the tracker forgets our nick on unavailable
            self.moderation.on_presence(stanza)
            self.mucs.on_presence(stanza)
            return
        if stanza["type"] == "error":
            await self._bounced(stanza)
            return
        if stanza["type"] == "groupchat":
            await self.inbound.groupchat(stanza)
        else:
            await self.inbound.direct(stanza)

    async def convert_remote(self, item: RemoteInput) -> Sequence[RemoteEvent]:
        return await self.inbound.convert(item)

    async def _bounced(self, error_stanza: Message) -> None:
        """An error for something we sent: retry what may heal, tell the sender about the rest."""
        error = error_stanza["error"]
        condition, text = error["condition"], error["text"]
        sent = self._sent.get(error_stanza["id"])
        if sent is None:
            self._log.info("Error %s from %s for %s, which we no longer track", condition, error_stanza["from"],
                           error_stanza["id"])  # fmt: skip
            return
        if error["type"] == "wait" and sent.attempts < MAX_RESENDS:
            sent.attempts += 1
            delay = 2.0**sent.attempts
            self._log.warning(
                "XMPP bounced %s (%s); resending in %.0f s", error_stanza["id"], condition, delay
            )
            self._ctx.background(self._resend(sent, delay), name=f"resend {error_stanza['id']}")
            return
        del self._sent[error_stanza["id"]]
        reason = f"{condition}: {text}" if text else condition
        await self._ctx.delivery_failed(
            sent.event_id,
            PermanentError(
                f"XMPP error {reason}",
                user_message=f"The XMPP server did not deliver it ({reason}).",
            ),
        )

    async def _resend(self, sent: _Sent, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            sent.component.send(copy(sent.stanza))
        except TransientError:
            await self._ctx.delivery_failed(
                sent.event_id, TransientError("XMPP down while resending")
            )

    def _track(self, stanza_id: str, event_id: str, stanza: Message, component: Component) -> None:
        self._sent[stanza_id] = _Sent(event_id, copy(stanza), component)
        while len(self._sent) > TRACKED_STANZAS:
            self._sent.popitem(last=False)

    async def _reference(self, portal: Portal, target: StoredMessage) -> str:
        """The id XMPP clients know a message by: in a MUC its stanza-id, if the room gave one."""
        if portal.is_direct:
            return target.remote_id
        mapped = await self._ctx.store.kv_get(
            reverse_stanza_id_key(portal.remote_id, target.remote_id)
        )
        return mapped or target.remote_id

    # --- lookups ----------------------------------------------------------------------------------

    async def get_chat_info(self, portal: PortalKey) -> ChatInfo:
        if portal.receiver:
            return ChatInfo(
                is_direct=True,
                matrix_users=[portal.receiver],
                members=[RemoteUserID(portal.remote_id)],
            )
        room = self.mucs.room(portal.remote_id)
        local, domain, _ = split_jid(portal.remote_id)
        topic = room.subject or await self._ctx.store.kv_get(subject_key(portal.remote_id))
        return ChatInfo(name=local or domain, topic=topic, is_direct=False)

    async def get_user_info(self, user: RemoteUserID) -> UserInfo:
        if not is_valid_jid(user):
            raise NotFound(
                f"{user!r} is not a JID", user_message=f"{user} is not a valid XMPP address."
            )
        local, domain, resource = split_jid(user)
        fallback = UserInfo(name=resource or local or domain)
        if resource or not self.component.up:
            return fallback  # a MUC occupant known only by nick
        return await fetch_vcard(self.component.xmpp, self._cfg.jid, user, self._log) or fallback

    async def start_direct_chat(self, user: RemoteUserID, matrix_user: str) -> PortalKey:
        _, domain, resource = split_jid(user) if is_valid_jid(user) else (None, "", None)
        if not domain or resource or domain in (self._cfg.jid, self._cfg.rooms_domain):
            raise NotFound(
                f"cannot chat with {user!r}",
                user_message=f"{user} is not an XMPP address the bridge can reach.",
            )
        return dm_key(bare_jid(user), matrix_user)

    async def bridge_room(self, remote_id: str, matrix_user: str) -> tuple[PortalKey, ChatInfo]:
        room = remote_id.strip()
        if not is_valid_jid(room) or split_jid(room)[2] is not None or split_jid(room)[0] is None:
            raise NotFound(
                f"bad MUC JID {room!r}",
                user_message=f"`{room}` is not a room address like team@muc.example.org.",
            )
        room = bare_jid(room)
        if self._hosts(room):
            raise NotFound(
                f"{room} is hosted by the bridge",
                user_message=f"{room} is a Matrix room already; join it in Matrix.",
            )
        try:
            await self._join(room, self._cfg.listener_jid, self._cfg.muc_nick, history=0)
        except (JoinError, TimeoutError) as err:
            raise NotFound(
                str(err), user_message=f"The bridge could not join {room}: {err or 'no answer'}."
            ) from err
        if await self.inbound.marks.get(room) is None:  # a later gap catches up from now
            self.inbound.marks.move(room, ArchiveMark("", int(time.time() * 1000)))
        key = muc_key(room)
        return key, await self.get_chat_info(key)

    # --- Matrix → XMPP ----------------------------------------------------------------------------

    async def _routes(
        self, portal: Portal, mxid: str, name: str
    ) -> list[tuple[Component, str, str, MessageType]]:
        """(component, from, to, type) of each stanza that carries what ``mxid`` does in ``portal``."""
        if portal.is_direct:
            return [(self.component, mxid_to_jid(mxid, self._cfg.jid), portal.remote_id, "chat")]
        if self.hosted is not None and self.hosted.hosts(portal.remote_id):
            return [(self.hosted.component, f"{portal.remote_id}/{name}", occupant, "groupchat")
                    for occupant in self.hosted.occupants(portal.remote_id)]  # fmt: skip
        return [
            (
                self.component,
                await self._puppet_in(portal.remote_id, mxid, name),
                portal.remote_id,
                "groupchat",
            )
        ]

    async def _send(
        self,
        portal: Portal,
        mxid: str,
        name: str,
        event_id: str,
        stanza_id: str,
        body: str = "",
        decorate: Callable[[Message], object] | None = None,
    ) -> None:
        self.component.require_up()
        hosted = self._hosts(portal.remote_id)
        routes = await self._routes(portal, mxid, name)
        for component, mfrom, mto, mtype in routes:
            stanza = component.xmpp.make_message(
                mto=JID(mto), mfrom=JID(mfrom), mtype=mtype, mbody=body or None
            )
            stanza["id"] = stanza_id
            stanza["origin_id"]["id"] = stanza_id
            if hosted:  # we are the room: we assign its stanza-ids
                stanza["stanza_id"]["id"], stanza["stanza_id"]["by"] = stanza_id, portal.remote_id
            if decorate is not None:
                decorate(stanza)
            if not hosted:
                self._track(stanza_id, event_id, stanza, component)
            component.send(stanza)

    async def handle_matrix_message(self, msg: MatrixMessage) -> RemoteMessageID:
        self.component.require_up()
        if msg.relayed:
            self.moderation.relayed_by(msg.sender)
        stanza_id = outgoing_id(msg.event_id)
        body = from_matrix.body(msg)
        url = None
        if msg.media is not None:
            url = await upload(
                self.component.xmpp, self._ctx.http, self._cfg.upload_service,
                mxid_to_jid(msg.sender, self._cfg.jid), msg.media,
            )  # fmt: skip
            body = f"{body}\n{url}" if body else url
        reply_id = (
            await self._reference(msg.portal, msg.reply_to) if msg.reply_to is not None else None
        )

        def decorate(stanza: Message) -> None:
            if url is not None:
                stanza["oob"]["url"] = url
            if msg.reply_to is not None and reply_id is not None:
                stanza["reply"]["id"] = reply_id
                stanza["reply"]["to"] = self._author(msg.portal, msg.reply_to)
                stanza["reply"].add_quoted_fallback(msg.reply_to_text or "…")
            if stanza["type"] == "chat":
                stanza["markable"]

        await self._send(
            msg.portal, msg.sender, msg.sender_name, msg.event_id, stanza_id, body, decorate
        )
        return RemoteMessageID(stanza_id)

    def _author(self, portal: Portal, target: StoredMessage) -> str:
        if target.sender_id.startswith("@"):
            return mxid_to_jid(target.sender_id, self._cfg.jid)
        return target.sender_id

    async def handle_matrix_edit(self, edit: MatrixEdit) -> None:
        def decorate(stanza: Message) -> None:
            stanza["replace"]["id"] = edit.target.remote_id  # always the original (XEP-0308 §5)

        body = from_matrix.edit_body(edit)
        await self._send(edit.portal, edit.sender, edit.sender_name, edit.event_id,
                         outgoing_id(edit.event_id), body, decorate)  # fmt: skip

    async def handle_matrix_redaction(self, redaction: MatrixRedaction) -> None:
        target = await self._reference(redaction.portal, redaction.target)
        if not redaction.portal.is_direct and redaction.target.sender_id != redaction.sender:
            await self.moderator.redaction(redaction, target)  # by a moderator: XEP-0425
            return

        def decorate(stanza: Message) -> None:
            stanza["retract"]["id"] = target
            stanza["fallback"]["for"] = "urn:xmpp:message-retract:1"
            stanza.enable("store")

        await self._send(redaction.portal, redaction.sender, redaction.sender_name, redaction.event_id,
                         outgoing_id(redaction.event_id), from_matrix.RETRACTION_FALLBACK, decorate)  # fmt: skip

    async def _send_reactions(self, portal: Portal, event_id: str, sender: str, name: str,
                              target: StoredMessage, emojis: set[str]) -> None:  # fmt: skip
        reference = await self._reference(portal, target)

        def decorate(stanza: Message) -> None:
            stanza["reactions"]["id"] = reference
            stanza["reactions"].set_values(emojis, all_chars=True)
            stanza.enable("store")

        await self._send(
            portal, sender, name, event_id, outgoing_id(event_id, "react"), decorate=decorate
        )

    async def _reactions_of(self, portal: Portal, target: RemoteMessageID, sender: str) -> set[str]:
        return {r.emoji for r in await self._ctx.store.list_reactions(portal.key, target, sender)}

    async def handle_matrix_reaction(self, reaction: MatrixReaction) -> None:
        emojis = await self._reactions_of(
            reaction.portal, reaction.target.remote_id, reaction.sender
        )
        await self._send_reactions(reaction.portal, reaction.event_id, reaction.sender, reaction.sender_name,
                                   reaction.target, emojis | {reaction.emoji})  # fmt: skip

    async def handle_matrix_reaction_remove(self, removal: MatrixReactionRemove) -> None:
        portal = removal.portal
        target = await self._ctx.store.get_message(
            portal.remote_id, removal.target.message_id, removal.target.part_id, portal.receiver
        )
        if target is None:
            return
        emojis = await self._reactions_of(portal, target.remote_id, removal.sender)
        await self._send_reactions(portal, removal.event_id, removal.sender, removal.sender_name,
                                   target, emojis - {removal.target.emoji})  # fmt: skip

    async def handle_matrix_membership(self, change: MatrixMembership) -> None:
        room = change.portal.remote_id
        if change.portal.is_direct or not self.component.up:
            return
        if self.hosted is not None and self.hosted.hosts(room):
            self.hosted.member_changed(
                room, change.sender, change.sender_name, joined=change.membership == "join"
            )
            return
        if change.membership == "join":  # a rejoin in Matrix lifts an XMPP kick's hold
            self.moderation.matrix_rejoined(room, change.sender)
        if change.membership == "leave":  # their occupant leaves the bridged MUC too
            full = f"{mxid_to_jid(change.sender, self._cfg.jid)}/pontis"
            nick = self.mucs.room(room).nicks.get(full)
            if nick is not None:
                leave = self.component.xmpp.make_presence(
                    pto=JID(f"{room}/{nick}"), pfrom=JID(full), ptype="unavailable"
                )
                self.component.send(leave)

    async def handle_matrix_kick(self, kick: MatrixKick) -> None:
        await self.moderator.kick(kick)

    async def handle_matrix_power_levels(self, portal: Portal, levels: dict[str, Any],
                                         creators: list[str]) -> None:  # fmt: skip
        await self.moderator.power_levels(portal, levels, creators)

    async def handle_matrix_room_info(self, portal: Portal, info: ChatInfo, *, sender: str,
                                      sender_name: str) -> None:  # fmt: skip
        await self.moderator.room_info(portal, sender, sender_name, info)

    async def handle_matrix_typing(self, typing: MatrixTyping) -> None:
        if not typing.portal.is_direct or not self.component.up:
            return  # chat states in MUCs would need a puppet join per typist; not worth it
        mfrom = mxid_to_jid(typing.sender, self._cfg.jid)
        stanza = self.component.xmpp.make_message(
            mto=JID(typing.portal.remote_id), mfrom=JID(mfrom), mtype="chat"
        )
        stanza["chat_state"] = "composing" if typing.typing else "paused"
        stanza.enable("no-store")
        self.component.send(stanza)

    async def handle_matrix_receipt(self, receipt: MatrixReceipt) -> None:
        if not receipt.portal.is_direct or receipt.target.sender_id.startswith("@"):
            return  # markers are for the other person's messages, and not sent into MUCs
        mfrom = mxid_to_jid(receipt.sender, self._cfg.jid)
        stanza = self.component.xmpp.make_message(
            mto=JID(receipt.portal.remote_id), mfrom=JID(mfrom), mtype="chat"
        )
        stanza["displayed"]["id"] = receipt.target.remote_id
        stanza.enable("store")
        self.component.send(stanza)
