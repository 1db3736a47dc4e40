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
    MessagePart,
    NotFound,
    PermanentError,
    RemoteChatID,
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteMessageID,
    RemoteReactionSync,
    RemoteRedaction,
    RemoteUserID,
    TransientError,
    UserInfo,
)
from bridge.portal.models import Message as StoredMessage
from bridge.portal.models import RemoteInput
from bridge.teams.catch_up import Missed, missed_messages
from bridge.teams.client import TeamsSharedClient
from bridge.teams.coverage import MISSED_LOOKBACK_MS, Coverage
from bridge.teams.errors import as_bridge_error, graph_call
from bridge.teams.ids import NETWORK, message_id, parse_message_resource, portal_key
from bridge.teams.network import RecentIds, TeamsNetwork
from bridge.teams.ordering import ChatOrder, sort_key
from bridge.teams.tenant import TenantLink
from bridge.teams.to_matrix import (
    ghost_name,
    is_bridgeable,
    mentioned_users,
    message_parts,
    reaction_emojis,
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
        self._kept = RecentIds()
        """Changes kept lately, with and without the subscription that reported them: the
        same change reported by another watched account's subscription is not kept twice."""
        self._unsubscribed = set(net.tenants)
        """Tenants whose subscription this process has not (or no longer) seen in place."""

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

    async def catch_up(self) -> None:
        """Look for the recent messages of every bridged chat that Matrix has not seen: after
        a restart, or when Graph says notifications were missed. Not polling: once per gap. The
        chats are read in their portals' queues, after what the inbox holds already."""
        for portal in await self._ctx.store.list_portals():
            if portal.mxid:
                # One pending catch-up per chat is enough: it reads what is there when it runs.
                payload = {TOKEN: uuid.uuid4().hex}
                await self._ctx.accept_remote(
                    RemoteInput(portal.key, CATCH_UP, payload, dedupe_id=CATCH_UP)
                )

    async def missed(self, why: str, lookback_ms: int = 0) -> None:
        """Notifications were (or may have been) lost while the bridge ran: Graph said so,
        or the subscription had to be created again. The chats are caught up."""
        await self._coverage_lost(why, lookback_ms)
        await self.catch_up()

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
        if change == "deleted" or (msg is not None and msg.deleted_date_time is not None):
            if stored is None or from_matrix:
                return []  # unknown here, or the echo of a redaction made in Matrix
            return [
                RemoteRedaction(portal=key, target=target, sender=author[0] if author else None)
            ]
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
                msg, self._hosted_fetcher(link, chat_id, msg_id), await self._people(msg)
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
        return RemoteMessage(
            portal=portal_key(chat_id),
            id=message_id(msg.id),
            sender=author[0],
            sender_info=UserInfo(name=ghost_name(author[1], link.tenant.display_name))
            if author[1]
            else None,
            timestamp=timestamp_ms(msg),
            chat_info=chat_info,
            parts=message_parts(
                msg, self._hosted_fetcher(link, chat_id, msg.id), await self._people(msg)
            ),
            reply_to=reply_target(msg),
        )

    async def _reaction_syncs(
        self, chat_id: str, target: RemoteMessageID, msg: ChatMessage
    ) -> list[RemoteEvent]:
        """One complete set per user who reacts now or did before; Matrix users' own
        reactions (made through their login) are theirs already and not mirrored back."""
        key = portal_key(chat_id)
        current = reaction_emojis(msg)
        before = {
            RemoteUserID(r.sender_id)
            for r in await self._ctx.store.list_reactions(key, target)
            if not r.sender_id.startswith("@")
        }
        skip = set(await self.net.logged_in()) | self.net.relay_ids()
        return [
            RemoteReactionSync(
                portal=key, sender=user, target=target, emojis=current.get(user, set())
            )
            for user in sorted(set(current) | before)
            if user not in skip
        ]

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

    # --- catching up -----------------------------------------------------------------------

    async def _catch_up_chat(self, chat_id: str, token: str) -> list[RemoteEvent]:
        """The messages of a bridged chat written since the last one on Matrix, oldest first
        (at most ``catch_up_messages``, after a notice saying how many older were skipped).

        It may run before notifications stored earlier in the chat's queue (a catch-up left
        by a run that died) and reads Graph as it is now, so it bridges those too, in order;
        converting them afterwards finds them on Matrix. Those older than what a bounded
        catch-up kept are not bridged afterwards either (the notice counted them)."""
        if not await self._bridged(chat_id):
            return []
        link = await self.net.tenant_for_chat(chat_id)
        limit = self.net.cfg.catch_up_messages
        bound = await self.coverage.bound(chat_id, token)
        walked_at = self.coverage.now()
        try:
            found = await missed_messages(
                link, chat_id, lambda msg_id: self._known(chat_id, msg_id), limit, bound
            )
            await self.coverage.walked(chat_id, token, bound, walked_at)
        except TransientError:
            raise  # Graph away: the chat's queue waits for it
        except Exception as err:  # not a message lost: nothing to tell the room
            self._log.warning("Catch-up of chat %s failed: %s", chat_id, err)
            return []
        events: list[RemoteEvent] = []
        if found.skipped or found.more:
            oldest = found.messages[0].id if found.messages else None
            self._log.warning(
                "Catch-up of chat %s skipped %s%d older message(s) (catch_up_messages: %d)",
                chat_id, "more than " if found.more else "", found.skipped, limit,
            )  # fmt: skip
            if oldest:
                await self._set_floor(chat_id, oldest)
            events.append(_skipped_notice(chat_id, found, limit, oldest or "none"))
        events += [await self._new_message(chat_id, msg, link, None) for msg in found.messages]
        if found.messages:
            self._log.info("Catching up %d message(s) in chat %s", len(found.messages), chat_id)
        return events

    async def _known(self, chat_id: str, msg_id: str) -> bool:
        """Whether the message is on Matrix (bridged, or sent from there)."""
        if msg_id in self.net.sent:
            return True
        return (
            await self._ctx.store.get_message(RemoteChatID(chat_id), message_id(msg_id)) is not None
        )

    async def _set_floor(self, chat_id: str, oldest: str) -> None:
        if oldest.isdigit():
            self._floors[chat_id] = int(oldest)
            await self._ctx.store.kv_set(_floor_marker(chat_id), oldest)

    async def _below_floor(self, chat_id: str, msg_id: str) -> bool:
        """Whether a bounded catch-up skipped this message (and said so in the room): it must
        not arrive now, below the newer ones. One store read per chat and process."""
        if not msg_id.isdigit():
            return False
        if chat_id not in self._floors:
            raw = await self._ctx.store.kv_get(_floor_marker(chat_id))
            self._floors[chat_id] = int(raw) if raw and raw.isdigit() else None
        floor = self._floors[chat_id]
        return floor is not None and int(msg_id) < floor


def _skipped_notice(chat_id: str, found: Missed, limit: int, oldest: str) -> RemoteMessage:
    if found.skipped:
        count = f"{'More than ' if found.more else ''}{found.skipped} older message(s)"
    else:
        count = "Older messages"
    text = (
        f"{count} of this Teams chat were not bridged: after an outage the bridge catches up"
        f" at most {limit} messages per chat. Read them in Teams."
    )
    return RemoteMessage(
        portal=portal_key(chat_id),
        id=RemoteMessageID(f"catch-up-skipped:{oldest}"),
        parts=[MessagePart(text=text, notice=True)],
    )


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


def _floor_marker(chat_id: str) -> str:
    """The oldest message a bounded catch-up of the chat bridged (pruned by age)."""
    return f"catch-up-floor:{chat_id}"
