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
    MatrixPresence,
    MatrixProfile,
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
from bridge.xmpp.avatars import RemoteAvatars
from bridge.xmpp.chat_states import ChatStates
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
from bridge.xmpp.invites import Invitations, is_invitation
from bridge.xmpp.joins import MucJoins
from bridge.xmpp.mam import Archive
from bridge.xmpp.matrix_invites import MatrixInvitations
from bridge.xmpp.moderation import MucModeration, subject_key
from bridge.xmpp.moderator import MatrixModerator
from bridge.xmpp.muc import JoinError, MucTracker
from bridge.xmpp.muc_presence import MucKeeper
from bridge.xmpp.presence import MatrixAnnouncer, RemotePresence
from bridge.xmpp.private import PrivateMessages, is_private
from bridge.xmpp.protocol.escaping import (
    bare_jid,
    is_valid_jid,
    jid_to_mxid,
    mxid_to_jid,
    split_jid,
)
from bridge.xmpp.routing import misdirected
from bridge.xmpp.store import ArchiveMark, XmppStore
from bridge.xmpp.upload import upload
from bridge.xmpp.vcards import fetch_vcard

MAX_RESENDS = 3
TRACKED_STANZAS = 2000
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

    def __init__(self, ctx: ConnectorContext, cfg: XmppConfig, store: XmppStore,
                 route: Callable[[str], str] | None = None) -> None:  # fmt: skip
        self._ctx = ctx
        self._cfg = cfg
        # The component domain that serves a remote JID (components.py); this one alone if None.
        self._route: Callable[[str], str] = route or (lambda _: cfg.jid)
        self.report_state: Callable[[bool, str], None] = self._report_state
        self._hosted_started = False
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
        self.moderation = MucModeration(ctx, f"{cfg.listener_jid}/pontis", self._puppet_mxid,
                                        self.mucs)  # fmt: skip
        self.inbound.moderation = self.moderation
        self.joins = MucJoins(ctx, cfg, self.component, self.mucs, self.inbound, self.archive,
                              self.moderation, self.identity, self._hosts, self._route)  # fmt: skip
        self.keeper = MucKeeper(ctx, self.component, self.mucs, f"{cfg.listener_jid}/pontis",
                                self.joins.join_listener, cfg.self_ping_minutes)  # fmt: skip
        self.joins.rejoining = self.keeper.rejoining
        self.avatars = RemoteAvatars(ctx, self.component.xmpp, cfg.jid, f"{cfg.listener_jid}/pontis",
                                     self.mucs, self.moderation)  # fmt: skip
        self.announcer = MatrixAnnouncer(cfg.jid, self.identity.send_presence, self.mucs,
                                         self.identity.photos)  # fmt: skip
        self.presence = RemotePresence(ctx)
        if self.hosted is not None:
            self.hosted.photo_of = self.identity.photos.cached
            self.hosted.on_occupant = self._hosted_occupant
        self.moderator = MatrixModerator(ctx, self.component, self.hosted, self.mucs,
                                         self.moderation, self.joins.puppet_in)  # fmt: skip
        self.private = PrivateMessages(ctx, cfg, self.component, self.hosted, self.mucs,
                                       self.moderation, self.joins.puppet_in, self.files)  # fmt: skip
        if self.hosted is not None:
            self.hosted.on_private = self.private.from_hosted
        self.owns: Callable[[str], bool] = lambda domain: domain in (cfg.jid, cfg.rooms_domain)
        """Whether a domain is the bridge's own: this component's, or any of the hub's
        (set by :class:`bridge.xmpp.components.XmppClients`)."""
        outgoing = MatrixInvitations(ctx, cfg, self.component, self.hosted, self.joins.puppet_in)
        self.invitations = Invitations(ctx, cfg, self.component, self, outgoing=outgoing)
        self.chat_states = ChatStates(cfg, self.component, self.hosted, self.mucs, self.private,
                                      self._reference)  # fmt: skip

    def _puppet_mxid(self, jid: str) -> str | None:
        """The Matrix user whose occupant ``jid`` (bare) is, if it is one of ours."""
        mxid = jid_to_mxid(jid, self._cfg.jid) if jid != self._cfg.listener_jid else None
        return mxid if mxid is not None and self._ctx.parse_ghost_mxid(mxid) is None else None

    # --- connection -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Start; after a failure (the store), calling it again goes on where it stopped."""
        if self.hosted is not None and not self._hosted_started:
            await self.hosted.load()
            self.hosted.component.start()
            self._hosted_started = True
        await self.joins.hold_bridged_mucs()
        self.component.start()
        self.keeper.start()

    async def disconnect(self) -> None:
        await self.component.stop()
        await self.inbound.marks.close()
        if self.hosted is not None:
            await self.hosted.component.stop()
        await self.files.close()

    def _report_state(self, up: bool, message: str) -> None:
        self._ctx.set_client_state(self.login_id, connected=up, message=message)

    async def _on_state(self, up: bool, message: str) -> None:
        self.report_state(up, message)
        if not up:
            self.mucs.forget_all()
            self.moderation.forget_all()
            return
        # MUCs drop our occupants while we are away (status 333): rejoin and catch up from the
        # room's archive; messages already bridged are recognised by their ids. Rooms we host
        # are ours: joining them as an occupant would echo them into themselves.
        for room in await self.joins.hold_bridged_mucs():
            self._ctx.background(self.joins.rejoin(room), name=f"rejoin {room}")

    def _hosts(self, room: str) -> bool:
        return self.hosted is not None and self.hosted.hosts(room)

    def real_occupants(self, room: str) -> set[str]:
        """The real bare JIDs the bridged MUC ``room`` shows for its occupants now."""
        tracked = self.mucs.rooms.get(room)
        return {jid for jid in tracked.occupants.values() if jid} if tracked is not None else set()

    def leave_unbridged(self, room: str) -> None:
        """The listener joined ``room`` for an invitation that did not count: leave again."""
        tracked = self.mucs.rooms.get(room)
        full = f"{self._cfg.listener_jid}/pontis"
        nick = tracked.nicks.get(full) if tracked is not None else None
        if nick is None or not self.component.up:
            return
        self.component.send(self.component.xmpp.make_presence(
            pto=JID(f"{room}/{nick}"), pfrom=JID(full), ptype="unavailable"))  # fmt: skip

    # --- XMPP → Matrix ----------------------------------------------------------------------------

    async def _on_stanza(self, stanza: Stanza) -> None:
        if isinstance(stanza, Presence):
            self.keeper.on_presence(stanza)  # first: the tracker forgets our nick on unavailable
            self.moderation.on_presence(stanza)
            self.mucs.on_presence(stanza)
            origin = self.avatars.origin(stanza)
            self.avatars.on_presence(stanza, origin)
            self.presence.on_presence(stanza, origin)
            return
        if misdirected(self.component, stanza, self._route, self._log):
            return  # another component's to hear, or nobody's (routing.py)
        if stanza["type"] == "error":
            await self._bounced(stanza)
            return
        if self.avatars.on_message(stanza):
            return  # a XEP-0084 avatar notification
        if is_invitation(stanza):
            await self.invitations.from_xmpp(stanza)
        elif self.private.relayed(stanza):  # a MUC relays it: a private message, or its own
            await self.private.from_bridged(stanza)
        elif stanza["type"] == "groupchat":
            await self.inbound.groupchat(stanza)
        else:
            await self.inbound.direct(stanza)

    def _hosted_occupant(self, presence: Presence, room: str, user: RemoteUserID) -> None:
        origin = self.avatars.hosted_origin(room, user)
        self.avatars.on_presence(presence, origin)
        self.presence.on_presence(presence, origin)

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
        if portal.receiver:  # a private conversation's ghost comes with its messages
            private = "/" in portal.remote_id
            return ChatInfo(is_direct=True, matrix_users=[portal.receiver],
                            members=None if private else [RemoteUserID(portal.remote_id)])  # fmt: skip
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
        if self._hosts(room) or self.owns(split_jid(room)[1].lower()):
            raise NotFound(
                f"{room} is hosted by the bridge",
                user_message=f"{room} is a Matrix room already; join it in Matrix.",
            )
        try:
            await self.joins.join(room, self._cfg.listener_jid, self._cfg.muc_nick, history=0)
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
        if is_private(portal):
            return [(*await self.private.route(portal, mxid, name), "chat")]
        if portal.is_direct:
            return [(self.component, mxid_to_jid(mxid, self._cfg.jid), portal.remote_id, "chat")]
        if self.hosted is not None and self.hosted.hosts(portal.remote_id):
            return [(self.hosted.component, f"{portal.remote_id}/{name}", occupant, "groupchat")
                    for occupant in self.hosted.occupants(portal.remote_id)]  # fmt: skip
        return [
            (
                self.component,
                await self.joins.puppet_in(portal.remote_id, mxid, name),
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

    async def handle_matrix_profile(self, change: MatrixProfile) -> None:
        hosted = self.hosted.profile_changed if self.hosted is not None and self.hosted.hosts(
            change.portal.remote_id) else None  # fmt: skip
        await self.announcer.profile_changed(change, hosted)

    async def handle_matrix_presence(self, presence: MatrixPresence) -> None:
        changed = self.identity.states.changed(presence)  # probes are answered with it too
        if changed and self.component.up:
            portals = [
                p
                for p in await self._ctx.store.list_portals()
                if self._route(p.remote_id) == self._cfg.jid
            ]  # this component's chats
            await self.announcer.presence_changed(presence.sender, portals)

    async def handle_matrix_kick(self, kick: MatrixKick) -> None:
        await self.moderator.kick(kick)

    async def handle_matrix_power_levels(self, portal: Portal, levels: dict[str, Any],
                                         creators: list[str]) -> None:  # fmt: skip
        await self.moderator.power_levels(portal, levels, creators)

    async def handle_matrix_room_info(self, portal: Portal, info: ChatInfo, *, sender: str,
                                      sender_name: str) -> None:  # fmt: skip
        await self.moderator.room_info(portal, sender, sender_name, info)

    async def handle_matrix_typing(self, typing: MatrixTyping) -> None:
        await self.chat_states.typing(typing)

    async def handle_matrix_receipt(self, receipt: MatrixReceipt) -> None:
        await self.chat_states.receipt(receipt)

    async def handle_matrix_invite(self, portal: Portal, inviter: str, user: RemoteUserID) -> None:
        await self.invitations.from_matrix(portal, inviter, user)
