"""Teams → Matrix: change notifications and catch-up, through the core's remote inbox.

The webhook hands every trusted notification of a chat that is (or may become) bridged to
``ctx.accept_remote`` before Graph gets its ``202``; :meth:`Inbound.convert` then runs inside
the portal's ordered queue, now and again after a crash, and turns it into Remote* events. A
notification only names a message (``chats('…')/messages('…')``), so converting fetches it with
the tenant's app token and decides what changed: Graph sends ``updated`` for edits, reactions
and undeletes alike, so an update is compared with what the bridge has stored. Graph away (429,
5xx, unreachable) is a ``TransientError`` and the portal waits for it, however long; a refusal
(403) is permanent. Catch-up goes through the inbox too, as a ``catch_up`` input per chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

from kiota_abstractions.api_error import APIError
from msgraph.generated.models.chat_message import ChatMessage

from bridge.core import (
    ChatInfo,
    NotFound,
    PermanentError,
    RemoteChatID,
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteMessageID,
    RemoteRedaction,
    RemoteUserID,
)
from bridge.portal.models import Message as StoredMessage
from bridge.portal.models import RemoteInput
from bridge.teams.channel_inbound import ChannelInbound
from bridge.teams.chat_catch_up import ChatCatchUp
from bridge.teams.client import TeamsSharedClient
from bridge.teams.coverage import MISSED_LOOKBACK_MS, Coverage
from bridge.teams.errors import as_bridge_error, graph_call
from bridge.teams.files import FilesToMatrix
from bridge.teams.ids import (
    NETWORK,
    message_id,
    parse_channel,
    parse_message_resource,
    portal_key,
)
from bridge.teams.member_sync import is_member_change, member_events
from bridge.teams.network import RecentIds, TeamsNetwork
from bridge.teams.ordering import ChatOrder, sort_key
from bridge.teams.relay_reactions import is_relay_post
from bridge.teams.replay import reaction_syncs
from bridge.teams.tenant import TenantLink
from bridge.teams.to_matrix import (
    is_bridgeable,
    mentioned_users,
    message_parts,
    reply_target,
    sender_of,
    timestamp_ms,
)

NOTIFICATION = "notification"
CATCH_UP = "catch_up"
TOKEN = "pontisToken"
"""Added to a stored notification: tells this input's own earlier attempts from other inputs."""
LIFECYCLE_TRIES = 5


class Inbound:
    def __init__(self, net: TeamsNetwork, shared: TeamsSharedClient) -> None:
        self.net = net
        self._shared = shared
        self._ctx = net.ctx
        self._log = net.ctx.log
        self._client_state = ""
        self.ready = asyncio.Event()
        """Set once the Graph SDK's models are loaded; converting waits for it."""
        self._order = ChatOrder(self._ctx.accept_remote)
        self._floors: dict[str, int | None] = {}
        """Per chat, the oldest message a bounded catch-up bridged (see ``_below_floor``)."""
        self.coverage = Coverage(self._ctx.store, self._log)
        """How far back a catch-up looks."""
        self._catch_up = ChatCatchUp(net, self.coverage, self._new_message, self._events_for)
        """Catch-up of bridged chats (bridge.teams.chat_catch_up)."""
        self._kept = RecentIds()
        """Changes kept lately, with and without the subscription that reported them: the
        same change reported by another watched account's subscription is not kept twice."""
        self._files = FilesToMatrix(net.cfg.max_file_mb * 1024 * 1024, net.ctx.http)
        """Shared files of new messages, as their content (``max_file_mb``)."""
        self._unsubscribed = set(net.tenants)
        """Tenants whose subscription this process has not (or no longer) seen in place."""
        subs = net.channel_subscriptions
        self.channels = ChannelInbound(net, subs, self._people, self._edited) if subs else None
        """Bridged team channels (bridge.teams.channel_inbound)."""

    def set_client_state(self, client_state: str) -> None:
        self._client_state = client_state

    # --- accepting (the webhook, before its 202) -------------------------------------------

    async def accept(self, items: list[dict[str, Any]]) -> None:
        """Keep the trusted ``items`` of one webhook call durably, each chat's in the order
        its messages were written (:mod:`bridge.teams.ordering`); raises if they could not be
        kept (the webhook then asks Graph to come back)."""
        stored: list[asyncio.Future[None]] = []
        keys: list[str] = []
        for item in items:
            if "lifecycleEvent" in item:
                event = str(item["lifecycleEvent"])
                self._ctx.background(self._lifecycle(item, event), name=f"lifecycle-{event}")
                continue
            parsed = parse_message_resource(str(item.get("resource", "")))
            if parsed is None:
                channel = await self.channels.accepted(item) if self.channels else None
                if channel is not None:  # of a bridged channel
                    order = sort_key(channel[1], str(item.get("changeType", "updated")))
                    stored.append(self._order.add(channel[0].portal.remote_id, order, channel[0]))
                    continue
                self._log.debug("Ignoring notification for %s", item.get("resource"))
                continue
            chat_id, msg_id = parsed
            change = str(item.get("changeType", "updated"))
            if not await self._bridged(chat_id):
                if change != "created":
                    continue  # nothing of that chat is on Matrix to change
                if not await self._watched(item):
                    # Not from a subscription on a watched account (an older tenant-wide one,
                    # a logged-out user's, a forged id): the chat is none of the hub's business.
                    self._log.debug("Ignoring a notification for unbridged chat %s", chat_id)
                    continue
            # A new message of a chat without a portal, from a watched account's subscription,
            # is kept too: converting it reads the chat's members first and the message only
            # if one of them is a Matrix user.
            dedupe = _dedupe_id(change, msg_id, item)
            if dedupe is not None:
                # Two watched accounts in one chat: each subscription reports the same change.
                seen = f"{chat_id}|{dedupe}|{item.get('subscriptionId')}"
                if f"{chat_id}|{dedupe}" in self._kept and seen not in self._kept:
                    continue
                keys += [f"{chat_id}|{dedupe}", seen]
            payload = {k: v for k, v in item.items() if k != "clientState"}
            payload[TOKEN] = uuid.uuid4().hex
            kept = RemoteInput(
                portal=portal_key(chat_id), kind=NOTIFICATION, payload=payload,
                dedupe_id=dedupe,
            )  # fmt: skip
            stored.append(self._order.add(chat_id, sort_key(msg_id, change), kept))
        for outcome in await asyncio.gather(*stored, return_exceptions=True):
            if isinstance(outcome, BaseException):
                # Graph retries the call, but may give up: the next catch-up looks back here.
                with contextlib.suppress(Exception):  # what matters is the caller's failure
                    await self._coverage_lost("a webhook call could not be stored")
                raise outcome
        for key in keys:
            self._kept.add(key)

    async def _watched(self, item: dict[str, Any]) -> bool:
        """Whether ``item`` came from the subscription of an account the hub watches (the
        relay, a logged-in user) in its tenant: only then may its unbridged chat be read."""
        link = self.net.tenant(str(item.get("tenantId") or ""))
        if link is None:
            return False
        return bool(await link.watches(str(item.get("subscriptionId") or "")))

    async def _bridged(self, chat_id: str) -> bool:
        portal = await self._ctx.store.get_portal(RemoteChatID(chat_id))
        return portal is not None and bool(portal.mxid)

    async def catch_up(self, again: bool = False) -> None:
        """Look for the recent messages of every bridged chat that Matrix has not seen: after
        a restart, or when Graph says notifications were missed. Not polling: once per gap. The
        chats are read in their portals' queues, after what the inbox holds already."""
        # One pending catch-up per chat is enough at the start: it reads what is there when it
        # runs. A gap found later (``again``) may follow one that has read Graph already.
        dedupe = f"{CATCH_UP}:{uuid.uuid4().hex}" if again else CATCH_UP
        for portal in await self._ctx.store.list_portals():
            if portal.mxid:
                payload = {TOKEN: uuid.uuid4().hex}
                await self._ctx.accept_remote(
                    RemoteInput(portal.key, CATCH_UP, payload, dedupe_id=dedupe)
                )

    async def missed(self, why: str, lookback_ms: int = 0) -> None:
        """Notifications were (or may have been) lost while the bridge ran: Graph said so,
        or the subscription had to be created again. The chats are caught up."""
        await self._coverage_lost(why, lookback_ms)
        await self.catch_up(again=True)

    async def subscription_state(self, tenant: str, in_place: bool) -> None:
        """A tenant's subscription was renewed or created (``in_place``), or could not be."""
        if in_place:
            self._unsubscribed.discard(tenant)
            self._resume_coverage()
        else:
            self._unsubscribed.add(tenant)
            await self.coverage.end(f"the subscription of tenant {tenant} could not be renewed")

    async def _coverage_lost(self, why: str, lookback_ms: int = 0) -> None:
        await self.coverage.end(why, lookback_ms)
        self._resume_coverage()

    def _resume_coverage(self) -> None:
        if not self._unsubscribed:
            self.coverage.live()

    async def _lifecycle(self, item: dict[str, Any], event: str) -> None:
        link = self.net.tenant(str(item.get("tenantId") or "")) or next(
            iter(self.net.tenants.values())
        )
        self._log.info("Lifecycle event %s for tenant %s", event, link.id)
        for attempt in range(1, LIFECYCLE_TRIES + 1):
            try:
                sub_id = str(item.get("subscriptionId") or "")
                if self.channels and await self.channels.subscriptions.lifecycle(event, sub_id):
                    return  # a bridged channel's subscription
                if event == "reauthorizationRequired":
                    await link.reauthorize(self._client_state, sub_id)
                elif event == "subscriptionRemoved":
                    await link.create_subscription(self._client_state, sub_id)
                elif event == "missed":
                    await self.missed("Graph's missed lifecycle event", MISSED_LOOKBACK_MS)
                return
            except Exception as err:
                if attempt == LIFECYCLE_TRIES:
                    # The subscription loop renews or recreates it; a restart catches up.
                    self._log.error("Lifecycle event %s not handled: %s", event, err)
                    return
                self._log.warning("Lifecycle event %s: %s; retrying", event, err)
                await asyncio.sleep(min(2**attempt, 60))

    # --- converting (in the portal's queue) ------------------------------------------------

    async def convert(self, item: RemoteInput) -> Sequence[RemoteEvent]:
        await self.ready.wait()
        chat_id = item.portal.remote_id
        if self.channels is not None and parse_channel(chat_id) is not None:
            return await self.channels.convert(item)
        if item.kind == CATCH_UP:
            return await self._catch_up_chat(chat_id, str(item.payload.get(TOKEN, "")))
        if item.kind != NOTIFICATION:
            raise PermanentError(f"unknown Teams input {item.kind!r}")
        payload = item.payload
        parsed = parse_message_resource(str(payload.get("resource", "")))
        if parsed is None:
            return []
        msg_id = parsed[1]
        change = str(payload.get("changeType", "updated"))
        if change == "created" and msg_id in self.net.sent:
            return []  # the echo of a message sent from Matrix
        stored = await self._ctx.store.get_message(RemoteChatID(chat_id), message_id(msg_id))
        if change == "created" and stored is not None and stored.sender_id.startswith("@"):
            return []  # the same echo, after the core stored what it sent
        if stored is None and await is_relay_post(self._ctx.store, chat_id, msg_id):
            return []  # a Matrix user's reaction, shown by the relay account
        if change == "created" and stored is None and await self._below_floor(chat_id, msg_id):
            self._log.info("Message %s of %s was skipped by the catch-up", msg_id, chat_id)
            return []
        chat_info: ChatInfo | None = None
        bridged = await self._bridged(chat_id)
        if not bridged and (change != "created" or not await self._watched(payload)):
            return []  # checked again: the subscription may have ended since it was kept
        link = self.net.tenant(str(payload.get("tenantId") or ""))
        if link is None:
            link = await self.net.tenant_for_chat(chat_id)
        else:
            await self.net.remember_chat(chat_id, link.id)
        if not bridged:
            chat_info = await self._membership(chat_id, link)
            if chat_info is None:
                return []  # not bridged: its messages are not read
        msg = await self._fetch(link, chat_id, msg_id)
        if chat_info is not None and msg is not None:
            await self.coverage.first_bridged(chat_id, timestamp_ms(msg))
        return await self._events_for(
            chat_id, msg_id, change, msg, stored, link, str(payload.get(TOKEN, "")), chat_info
        )

    async def _membership(self, chat_id: str, link: TenantLink) -> ChatInfo | None:
        """The chat's info if one of its members is a Matrix user logged in to Teams whom
        ``bridge.federation`` lets the tenant reach (the others are not invited). Only read
        for a chat a watched account is in (its subscription sent the notification)."""
        try:
            info = await self._shared.get_chat_info(portal_key(chat_id))
        except (PermanentError, NotFound) as err:
            self._log.debug("Chat %s cannot be read (%s); not bridged", chat_id, err)
            return None
        tenant = link.tenant.tenant_id
        policy = self._ctx.federation
        info.matrix_users = [
            user
            for user in info.matrix_users or []
            if not policy.refusal(NETWORK, tenant, user, entry="new teams chat")
        ]
        if not info.matrix_users:
            self._log.debug("Chat %s has no bridged member it may reach; not bridged", chat_id)
            return None
        return info

    async def _fetch(self, link: TenantLink, chat_id: str, msg_id: str) -> ChatMessage | None:
        """The message as Graph has it now; None if Graph does not know it (deleted)."""
        what = f"read message {msg_id} of {chat_id}"
        try:
            return (
                await link.app.chats.by_chat_id(chat_id).messages.by_chat_message_id(msg_id).get()
            )
        except APIError as err:
            if err.response_status_code == 404:
                return None
            raise as_bridge_error(err, what, reading=True) from err
        except Exception as err:
            raise as_bridge_error(err, what, reading=True) from err

    # --- deciding what changed -------------------------------------------------------------

    async def _events_for(
        self,
        chat_id: str,
        msg_id: str,
        change: str,
        msg: ChatMessage | None,
        stored: StoredMessage | None,
        link: TenantLink,
        token: str,
        chat_info: ChatInfo | None = None,
    ) -> list[RemoteEvent]:
        """What ``change`` to message ``msg_id`` (``msg`` as Graph has it now, ``stored`` as
        the bridge mapped it) means on Matrix. ``token`` names the input being converted."""
        key = portal_key(chat_id)
        target = message_id(msg_id)
        from_matrix = stored is not None and stored.sender_id.startswith("@")
        author = sender_of(msg) if msg is not None else None
        if change == "deleted" and msg is not None and msg.deleted_date_time is None:
            # "deleted" is only the notification's word (replayed, or overtaken by an undelete):
            # Graph, read just now, still has the message, so Matrix keeps it.
            self._log.info("Message %s of %s is not deleted in Teams; kept", msg_id, chat_id)
            return []
        if change == "deleted" or (msg is not None and msg.deleted_date_time is not None):
            if stored is None or from_matrix:
                return []  # unknown here, or the echo of a redaction made in Matrix
            return [
                RemoteRedaction(portal=key, target=target, sender=author[0] if author else None)
            ]
        if change == "created" and msg is not None and is_member_change(msg):
            return await member_events(self.net, link, chat_id, msg, token)
        if msg is None or not is_bridgeable(msg) or author is None:
            return []  # gone from Graph (404) before it was read, or not a user's message
        if change == "created" or stored is None:
            if msg_id in self.net.sent or from_matrix:
                return []
            # Also when ``stored``: a message whose text reached Matrix before one of its
            # pictures failed is completed (the core sends only the parts it has not stored).
            return [await self._new_message(chat_id, msg, link, chat_info)]
        events: list[RemoteEvent] = []
        if not from_matrix and await self._edited(chat_id, msg_id, msg, token):
            parts = message_parts(
                msg, self._hosted_fetcher(link, chat_id, msg_id), await self._people(msg), []
            )
            events.append(RemoteEdit(portal=key, target=target, sender=author[0], parts=parts))
        events += await self._reaction_syncs(chat_id, target, msg)
        return events

    async def _edited(self, chat_id: str, msg_id: str, msg: ChatMessage, token: str) -> bool:
        """Whether this update is an edit Matrix has not seen. The marker records the edit
        time and the input that bridges it, so the same input, converted again after a failed
        send or a crash, bridges the edit again, and another update (a reaction) does not."""
        edited = msg.last_edited_date_time
        if edited is None:
            return False
        marker = _edit_marker(chat_id, msg_id)
        seen = (await self._ctx.store.kv_get(marker) or "").split("|")
        if seen[0] == edited.isoformat():
            return seen[1:] == [token]
        await self._ctx.store.kv_set(marker, f"{edited.isoformat()}|{token}")
        return True

    async def _people(self, msg: ChatMessage) -> dict[RemoteUserID, str]:
        """The Matrix ID of each person ``msg`` mentions who has one here: a logged-in Matrix
        user's own, else their ghost (the relay account stands for no one)."""
        mentioned = set(mentioned_users(msg).values())
        if not mentioned:
            return {}
        logins = await self.net.logged_in()
        relays = self.net.relay_ids()
        return {
            user: logins.get(user) or self._ctx.ghost_mxid(user)
            for user in mentioned
            if user not in relays
        }

    async def _new_message(
        self, chat_id: str, msg: ChatMessage, link: TenantLink, chat_info: ChatInfo | None
    ) -> RemoteMessage:
        author = sender_of(msg)
        assert author is not None and msg.id is not None
        if msg.last_edited_date_time is not None:
            # Bridged as edited already: a replay of that edit is not another edit.
            edited = f"{msg.last_edited_date_time.isoformat()}|new"
            await self._ctx.store.kv_set(_edit_marker(chat_id, msg.id), edited)
        return RemoteMessage(
            portal=portal_key(chat_id),
            id=message_id(msg.id),
            sender=author[0],
            sender_info=await link.photos.sender(author[0], author[1], link.tenant.display_name),
            timestamp=timestamp_ms(msg),
            chat_info=chat_info,
            parts=message_parts(
                msg,
                self._hosted_fetcher(link, chat_id, msg.id),
                await self._people(msg),
                await self._files.parts(link, msg, author[0]),
            ),
            reply_to=reply_target(msg),
        )

    async def _reaction_syncs(
        self, chat_id: str, target: RemoteMessageID, msg: ChatMessage
    ) -> list[RemoteEvent]:
        """See :func:`bridge.teams.replay.reaction_syncs` (channels use it too)."""
        return await reaction_syncs(self.net, portal_key(chat_id), target, msg)

    def _hosted_fetcher(self, link: TenantLink, chat_id: str, msg_id: str) -> Any:
        async def fetch(hosted_id: str) -> bytes:
            item = (
                link.app.chats.by_chat_id(chat_id)
                .messages.by_chat_message_id(msg_id)
                .hosted_contents.by_chat_message_hosted_content_id(hosted_id)
            )
            what = f"download image of {msg_id}"
            data = await graph_call(what, item.content.get(), reading=True)
            return data or b""

        return fetch

    # --- catching up (bridge.teams.chat_catch_up) -----------------------------------------

    async def _catch_up_chat(self, chat_id: str, token: str) -> list[RemoteEvent]:
        return await self._catch_up.run(chat_id, token)

    async def _below_floor(self, chat_id: str, msg_id: str) -> bool:
        return await self._catch_up.below_floor(chat_id, msg_id)


def _dedupe_id(change: str, msg_id: str, item: dict[str, Any]) -> str | None:
    """What makes a redelivery of the same notification a no-op while it is pending. Updates
    have no id of their own unless Graph sends an etag; without one, each is kept (converting
    an update twice gives nothing new: it compares the message with what Matrix has)."""
    if change in ("created", "deleted"):
        return f"{change}:{msg_id}"
    data = item.get("resourceData")
    etag = data.get("@odata.etag") if isinstance(data, dict) else None
    return f"{change}:{msg_id}:{etag}" if etag else None


def _edit_marker(chat_id: str, msg_id: str) -> str:
    """The key of a message's last bridged edit (pruned by age: see ``kv_markers``)."""
    return f"edited:{chat_id}:{msg_id}"
