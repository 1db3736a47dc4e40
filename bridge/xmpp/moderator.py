"""Matrix → XMPP moderation: what a Matrix moderator does to a portal, done to the MUC.

In a room the bridge hosts the bridge *is* the room, so it announces the result to the
occupants itself; in a bridged MUC the Matrix user's own occupant asks the room, and the room
decides (a refusal becomes a notice to the Matrix user, raised as a ``PermanentError``). The
homeserver has already checked the Matrix side: a redaction of someone else's message, a kick,
a ban or a power-level change reaches the bridge only if its sender was allowed to make it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slixmpp import JID

from bridge.core import ChatInfo, ConnectorContext, MatrixKick, MatrixRedaction
from bridge.portal.models import Portal
from bridge.xmpp.component import Component
from bridge.xmpp.hosted import HostedRooms
from bridge.xmpp.ids import outgoing_id
from bridge.xmpp.moderation import (
    MucModeration,
    ban_key,
    moderation_announcement,
    nick_of_ghost,
    remove_from_muc,
    send_moderation,
    subject_key,
)
from bridge.xmpp.muc import MucTracker
from bridge.xmpp.protocol.escaping import bare_jid

PuppetIn = Callable[[str, str, str], Awaitable[str]]
"""(room, mxid, display name) → the full JID of that Matrix user's occupant, joining if needed."""


class MatrixModerator:
    def __init__(self, ctx: ConnectorContext, component: Component, hosted: HostedRooms | None,
                 mucs: MucTracker, moderation: MucModeration, puppet_in: PuppetIn) -> None:  # fmt: skip
        self._ctx = ctx
        self._component = component
        self._hosted = hosted
        self._mucs = mucs
        self._moderation = moderation
        self._puppet_in = puppet_in

    def _hosts(self, room: str) -> bool:
        return self._hosted is not None and self._hosted.hosts(room)

    async def redaction(self, redaction: MatrixRedaction, target: str) -> None:
        """A Matrix moderator removed someone else's message (``target``: the id XMPP knows
        it by): XEP-0425, not a retraction, which clients ignore from anyone but the author."""
        room = redaction.portal.remote_id
        self._component.require_up()
        if self._hosted is not None and self._hosted.hosts(room):  # we are the room
            for occupant in self._hosted.occupants(room):
                self._hosted.component.send(moderation_announcement(
                    self._hosted.component, room, occupant, target, redaction.sender_name,
                    outgoing_id(redaction.event_id)))  # fmt: skip
            return
        puppet = await self._puppet_in(room, redaction.sender, redaction.sender_name)
        await send_moderation(self._component, room, puppet, target)

    async def kick(self, kick: MatrixKick) -> None:
        """A Matrix moderator removed a ghost: the person leaves the MUC too (or is banned)."""
        room, ghost = kick.portal.remote_id, self._ctx.parse_ghost_mxid(kick.target)
        if kick.portal.is_direct or ghost is None:
            return
        self._component.require_up()
        if self._hosted is not None and self._hosted.hosts(room):
            person = bare_jid(ghost)
            if kick.unban:  # they may join again; they are not in the room to be removed
                await self._ctx.store.kv_delete(ban_key(room, person))
                return
            if kick.ban:
                await self._ctx.store.kv_set(ban_key(room, person), kick.sender)
            else:
                await self._ctx.store.kv_delete(ban_key(room, person))
            await self._hosted.remove(room, person, ban=kick.ban, reason=kick.reason)
            return
        if kick.unban or kick.relayed:
            # A bridged MUC keeps its own outcast list (a Matrix unban says nothing there), and
            # a relay-level moderator has no occupant to act with.
            return
        occupants = self._mucs.room(room).occupants
        nick, real = nick_of_ghost(room, ghost, occupants, self._moderation.occupant_ids(room))
        puppet = await self._puppet_in(room, kick.sender, kick.sender_name)
        await remove_from_muc(self._component, room, puppet, nick=nick, real=real, ban=kick.ban,
                              reason=kick.reason)  # fmt: skip

    async def power_levels(self, portal: Portal, levels: dict[str, Any],
                           creators: list[str]) -> None:  # fmt: skip
        """Rooms we host show the change as affiliations and roles (a bridged MUC decides
        rights itself: a Matrix power level gives none there)."""
        hosted = self._hosted
        if hosted is not None and hosted.hosts(portal.remote_id) and hosted.component.up:
            await hosted.rights_changed(portal.remote_id, levels, creators)

    async def room_info(self, portal: Portal, sender: str, name: str, info: ChatInfo) -> None:
        """A Matrix user changed the topic: the MUC's subject. A bridged MUC decides whether
        their occupant may (a refusal comes back as an error stanza, and a notice); the stored
        subject is set first, so the room's echo is not shown in Matrix again."""
        room = portal.remote_id
        if portal.is_direct or info.topic is None or not self._component.up:
            return
        await self._ctx.store.kv_set(subject_key(room), info.topic)
        if self._hosts(room):  # occupants get new subjects live; joiners get the portal's topic
            assert self._hosted is not None
            for occupant in self._hosted.occupants(room):
                msg = self._hosted.component.xmpp.make_message(
                    mto=JID(occupant), mfrom=JID(f"{room}/{name}"), mtype="groupchat"
                )
                msg["subject"] = info.topic
                self._hosted.component.send(msg)
            return
        puppet = await self._puppet_in(room, sender, name)
        msg = self._component.xmpp.make_message(mto=JID(room), mfrom=JID(puppet), mtype="groupchat")
        msg["subject"] = info.topic
        self._component.send(msg)
