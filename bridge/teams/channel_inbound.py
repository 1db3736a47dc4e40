"""Teams channel → Matrix: the notifications of a bridged channel's subscription.

A channel's top-level messages become messages of its portal room; its replies become Matrix
thread events under the room's copy of their root (``m.thread``). Only bridged channels are
read: a notification is kept only if it names a channel whose portal exists, came from that
channel's own subscription and from the tenant the channel belongs to — anything else (a
channel nobody bridged, a forged or stale subscription id, another tenant) is dropped without
a single Graph request. Converting checks the portal again before it reads the message.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kiota_abstractions.api_error import APIError
from msgraph.generated.models.chat_message import ChatMessage

from bridge.core import (
    PortalKey,
    RemoteChatID,
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteRedaction,
    RemoteUserID,
    TransientError,
)
from bridge.portal.models import Message as StoredMessage
from bridge.portal.models import RemoteInput
from bridge.teams import channel_members
from bridge.teams.channel_catch_up import ChannelCatchUp
from bridge.teams.channel_files import ChannelFiles
from bridge.teams.channel_subscriptions import ChannelSubscriptions
from bridge.teams.errors import as_bridge_error, graph_call
from bridge.teams.ids import (
    NETWORK,
    channel_key,
    message_id,
    parse_channel,
    parse_channel_resource,
)
from bridge.teams.member_sync import is_member_change
from bridge.teams.network import TeamsNetwork
from bridge.teams.relay_reactions import is_relay_post
from bridge.teams.replay import reaction_syncs
from bridge.teams.tenant import TenantLink
from bridge.teams.to_matrix import (
    is_bridgeable,
    message_parts,
    sender_of,
    timestamp_ms,
)

NOTIFICATION = "notification"
CATCH_UP = "catch_up"
"""The kinds and token key of bridge.teams.inbound, whose inputs these are too."""
TOKEN = "pontisToken"

People = Callable[[ChatMessage], Awaitable[dict[RemoteUserID, str]]]
Edited = Callable[[str, str, ChatMessage, str], Awaitable[bool]]


def channel_of(team_id: str, channel_id: str, link: TenantLink) -> Any:
    """The SDK's request builder for one channel (read with the tenant's app token)."""
    return link.app.teams.by_team_id(team_id).channels.by_channel_id(channel_id)


def message_builder(channel: Any, msg_id: str, reply_id: str | None) -> Any:
    """A channel message's request builder: a top-level one, or a reply under its root."""
    item = channel.messages.by_chat_message_id(msg_id)
    return item.replies.by_chat_message_id1(reply_id) if reply_id else item


class ChannelInbound:
    def __init__(
        self,
        net: TeamsNetwork,
        subscriptions: ChannelSubscriptions,
        people: People,
        edited: Edited,
    ) -> None:
        self.net = net
        self._ctx = net.ctx
        self._log = net.ctx.log
        self.subscriptions = subscriptions
        self._people = people
        self._edited = edited
        self._files = ChannelFiles(net.cfg.max_file_mb * 1024 * 1024, net.ctx.http)
        """Files of new channel messages, from the channel's team library (channel_files)."""
        subscriptions.missed = self.catch_up
        self._catching_up = ChannelCatchUp(net.ctx.store, self._log, net.cfg.catch_up_messages)

    # --- accepting (the webhook, before its 202) -------------------------------------------

    async def accepted(self, item: dict[str, Any]) -> tuple[RemoteInput, str] | None:
        """The input to keep for a channel notification (and the id to order it by), or
        ``None`` if it is not one, or not of a channel the hub bridges."""
        parsed = parse_channel_resource(str(item.get("resource", "")))
        if parsed is None:
            return None
        team, channel, msg_id, reply_id = parsed
        key = channel_key(team, channel)
        if not await self._bridged(key.remote_id):
            self._log.debug("Ignoring a notification for unbridged channel %s", key.remote_id)
            return None
        owner = await self.subscriptions.owner(str(item.get("subscriptionId") or ""))
        link = self.net.tenant(str(item.get("tenantId") or ""))
        if owner != key.remote_id or link is None:
            self._log.info("Ignoring a channel notification not from its own subscription")
            return None
        if (await self.net.tenant_for_chat(key.remote_id)).id != link.id:
            self._log.info("Ignoring a notification of %s from another tenant", key.remote_id)
            return None
        change = str(item.get("changeType", "updated"))
        target = reply_id or msg_id
        dedupe = f"{change}:{target}" if change in ("created", "deleted") else None
        payload = {k: v for k, v in item.items() if k != "clientState"}
        payload[TOKEN] = uuid.uuid4().hex
        kept = RemoteInput(portal=key, kind=NOTIFICATION, payload=payload, dedupe_id=dedupe)
        return kept, target

    async def catch_up(self, portal_id: str) -> None:
        """Graph lost the channel's notifications (its subscription had to be made again):
        read what Matrix missed, in the portal's queue. Each gap gets its own catch-up: one
        still queued may have read Graph before this gap (as bridge.teams.inbound's)."""
        key = PortalKey(NETWORK, RemoteChatID(portal_id))
        payload = {TOKEN: uuid.uuid4().hex}
        dedupe = f"{CATCH_UP}:{uuid.uuid4().hex}"
        await self._ctx.accept_remote(RemoteInput(key, CATCH_UP, payload, dedupe_id=dedupe))

    async def _bridged(self, portal_id: str) -> bool:
        portal = await self._ctx.store.get_portal(RemoteChatID(portal_id))
        return portal is not None and bool(portal.mxid)

    # --- converting (in the portal's queue) ------------------------------------------------

    async def convert(self, item: RemoteInput) -> Sequence[RemoteEvent]:
        portal_id = item.portal.remote_id
        channel = parse_channel(portal_id)
        parsed = parse_channel_resource(str(item.payload.get("resource", "")))
        if channel is None or not await self._bridged(portal_id):
            return []  # unbridged since it was kept: its messages are not read
        if item.kind == CATCH_UP:
            return await self._catch_up(item.portal, channel, str(item.payload.get(TOKEN, "")))
        if item.kind != NOTIFICATION or parsed is None:
            return []
        _, _, root_id, reply_id = parsed
        target = reply_id or root_id
        change = str(item.payload.get("changeType", "updated"))
        if change == "created" and target in self.net.sent:
            return []  # the echo of a message sent from Matrix
        stored = await self._ctx.store.get_message(RemoteChatID(portal_id), message_id(target))
        from_matrix = stored is not None and stored.sender_id.startswith("@")
        if change == "created" and from_matrix:
            return []
        link = await self.net.tenant_for_chat(portal_id)
        msg = await self._fetch(link, *channel, root_id, reply_id)
        key = item.portal
        token = str(item.payload.get(TOKEN, ""))
        if change == "created" and msg is not None and is_member_change(msg):
            # Graph's member list decides, never the message's (it may be replayed or forged).
            return await channel_members.member_events(self.net, link, portal_id, msg, token)
        author = sender_of(msg) if msg is not None else None
        # "deleted" is only the notification's word: Graph must agree (gone, or marked deleted).
        gone = msg is None and change == "deleted"
        if gone or (msg is not None and msg.deleted_date_time is not None):
            if stored is None or from_matrix:
                return []
            sender = author[0] if author else None
            return [RemoteRedaction(portal=key, target=message_id(target), sender=sender)]
        if msg is None or not is_bridgeable(msg) or author is None:
            return []
        # A private channel's room holds only its members when anything of it is shown.
        events = await channel_members.outsiders(self.net, key, await self._room(portal_id))
        if change == "created" or stored is None:
            return [*events, await self._new_message(key, link, channel, msg, root_id, reply_id)]
        return events + await self._changes(
            key, link, channel, msg, root_id, reply_id, stored, token
        )

    async def _room(self, portal_id: str) -> str:
        portal = await self._ctx.store.get_portal(RemoteChatID(portal_id))
        return portal.mxid if portal is not None and portal.mxid else ""

    async def _changes(
        self,
        key: PortalKey,
        link: TenantLink,
        channel: tuple[str, str],
        msg: ChatMessage,
        root_id: str,
        reply_id: str | None,
        stored: StoredMessage,
        token: str,
    ) -> list[RemoteEvent]:
        """What Matrix has not seen of a message it has (``msg`` as Graph has it now): a
        deletion, an edit, reactions. A change seen again gives nothing (the catch-up's replay
        and a late notification meet here)."""
        target = message_id(reply_id or root_id)
        from_matrix = stored.sender_id.startswith("@")
        author = sender_of(msg)
        if msg.deleted_date_time is not None:
            if from_matrix:
                return []  # the echo of a redaction made in Matrix
            sender = author[0] if author else None
            return [RemoteRedaction(portal=key, target=target, sender=sender)]
        if not is_bridgeable(msg) or author is None:
            return []
        events: list[RemoteEvent] = []
        if not from_matrix and await self._edited(key.remote_id, target, msg, token):
            fetch = self._hosted_fetcher(link, channel, root_id, reply_id)
            parts = message_parts(msg, fetch, await self._people(msg))
            events.append(RemoteEdit(portal=key, target=target, sender=author[0], parts=parts))
        return events + await reaction_syncs(self.net, key, target, msg)

    async def _new_message(
        self,
        key: PortalKey,
        link: TenantLink,
        channel: tuple[str, str],
        msg: ChatMessage,
        root_id: str,
        reply_id: str | None,
    ) -> RemoteMessage:
        """A top-level message, or (``reply_id``) a reply in the thread of ``root_id``."""
        author = sender_of(msg)
        assert author is not None
        fetch = self._hosted_fetcher(link, channel, root_id, reply_id)
        return RemoteMessage(
            portal=key,
            id=message_id(reply_id or root_id),
            sender=author[0],
            sender_info=await link.photos.sender(author[0], author[1], link.tenant.display_name),
            timestamp=timestamp_ms(msg),
            parts=message_parts(
                msg,
                fetch,
                await self._people(msg),
                await self._files.parts(link, channel, msg, author[0]),
            ),
            thread_root=message_id(root_id) if reply_id else None,
        )

    async def _catch_up(
        self, key: PortalKey, channel: tuple[str, str], token: str
    ) -> list[RemoteEvent]:
        """What the channel's notifications missed (bridge.teams.channel_catch_up). A failure
        is not swallowed: Graph away, the channel's queue waits for it; otherwise the core's
        inbox retries it, then sets it aside and posts a notice in the room."""
        link = await self.net.tenant_for_chat(key.remote_id)
        converting = _Converting(self, key, link, channel)
        # Members first: whoever left during the gap is out of the room before what it missed.
        members = await self._members(key, link, token)
        return members + await self._catching_up.run(
            key, link, channel_of(*channel, link), channel, token,
            int(time.time() * 1000), converting,
        )  # fmt: skip

    async def _members(self, key: PortalKey, link: TenantLink, token: str) -> list[RemoteEvent]:
        """The room made to match the channel's members; a refusal (no ``ChannelMember.Read.All``)
        leaves it as it is, and a private channel's room still holds only the members last read."""
        try:
            return await channel_members.reconcile(self.net, link, key.remote_id, token=token)
        except TransientError:
            raise
        except Exception as err:
            self._log.warning("Catch-up of %s: members not read (%s)", key.remote_id, err)
            return await channel_members.outsiders(self.net, key, await self._room(key.remote_id))

    async def _fetch(
        self, link: TenantLink, team: str, channel: str, root_id: str, reply_id: str | None
    ) -> ChatMessage | None:
        """The message as Graph has it now; None if Graph does not know it (deleted)."""
        what = f"read message {reply_id or root_id} of channel {channel}"
        try:
            found: ChatMessage | None = await message_builder(
                channel_of(team, channel, link), root_id, reply_id
            ).get()
            return found
        except APIError as err:
            if err.response_status_code == 404:
                return None
            raise as_bridge_error(err, what, reading=True) from err
        except Exception as err:
            raise as_bridge_error(err, what, reading=True) from err

    def _hosted_fetcher(
        self, link: TenantLink, channel: tuple[str, str], root_id: str, reply_id: str | None
    ) -> Any:
        async def fetch(hosted_id: str) -> bytes:
            item = message_builder(
                channel_of(*channel, link), root_id, reply_id
            ).hosted_contents.by_chat_message_hosted_content_id(hosted_id)
            data = await graph_call(
                f"download image of {reply_id or root_id}", item.content.get(), reading=True
            )
            return data or b""

        return fetch


@dataclass(slots=True)
class _Converting:
    """The channel's inbound path, as the catch-up of one channel uses it."""

    inbound: ChannelInbound
    key: PortalKey
    link: TenantLink
    channel: tuple[str, str]

    async def stored(self, msg_id: str) -> StoredMessage | None:
        return await self.inbound.net.ctx.store.get_message(self.key.remote_id, message_id(msg_id))

    async def known(self, msg_id: str) -> bool:
        if msg_id in self.inbound.net.sent or await self.stored(msg_id) is not None:
            return True
        return await is_relay_post(self.inbound.net.ctx.store, self.key.remote_id, msg_id)

    async def new_message(
        self, msg: ChatMessage, root_id: str, reply_id: str | None
    ) -> RemoteEvent | None:
        if sender_of(msg) is None:
            return None
        return await self.inbound._new_message(
            self.key, self.link, self.channel, msg, root_id, reply_id
        )

    async def changes(
        self,
        msg: ChatMessage,
        root_id: str,
        reply_id: str | None,
        stored: StoredMessage,
        token: str,
    ) -> list[RemoteEvent]:
        return await self.inbound._changes(
            self.key, self.link, self.channel, msg, root_id, reply_id, stored, token
        )
