"""Teams → Matrix: stored notifications and catch-up become Remote* events.

A notification only names a message (``chats('…')/messages('…')``); the worker fetches it
with the tenant's app token and decides what changed. Graph sends ``updated`` for edits,
reactions and undeletes alike, so an update is compared with what the bridge has stored.
Rows are deleted only after their events are on Matrix; rows of different chats are worked
on concurrently, rows of one chat in order.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.chats.item.messages.messages_request_builder import MessagesRequestBuilder
from msgraph.generated.models.chat_message import ChatMessage

from bridge.core import (
    BridgeError,
    ChatInfo,
    NotSupported,
    PermanentError,
    RemoteChatID,
    RemoteEdit,
    RemoteEvent,
    RemoteMessage,
    RemoteMessageID,
    RemoteReactionSync,
    RemoteRedaction,
    RemoteUserID,
    UserInfo,
)
from bridge.portal.models import Message as StoredMessage
from bridge.teams.client import TeamsSharedClient
from bridge.teams.errors import as_bridge_error, graph_call
from bridge.teams.ids import message_id, parse_message_resource, portal_key
from bridge.teams.network import TeamsNetwork
from bridge.teams.store import StoredNotification, TeamsStore
from bridge.teams.tenant import TenantLink
from bridge.teams.to_matrix import (
    is_bridgeable,
    message_parts,
    reaction_emojis,
    reply_target,
    sender_of,
    timestamp_ms,
)

MAX_ATTEMPTS = 8
PENDING_BATCH = 200
"""Stored notifications read at once."""


class Inbound:
    def __init__(self, net: TeamsNetwork, store: TeamsStore, shared: TeamsSharedClient) -> None:
        self.net = net
        self._store = store
        self._shared = shared
        self._ctx = net.ctx
        self._log = net.ctx.log
        self._wake = asyncio.Event()
        self._client_state = ""

    def wake(self) -> None:
        self._wake.set()

    def set_client_state(self, client_state: str) -> None:
        self._client_state = client_state

    # --- the worker ------------------------------------------------------------------------

    async def run(self) -> None:
        """Bridge stored notifications forever; a failed row is retried with backoff."""
        failures = 0
        while True:
            self._wake.clear()
            try:
                rows = await self._store.pending_notifications(PENDING_BATCH)
                if not rows:
                    await self._wake.wait()
                    continue
                by_chat: dict[str, list[StoredNotification]] = defaultdict(list)
                for row in rows:
                    parsed = parse_message_resource(str(row.payload.get("resource", "")))
                    by_chat[parsed[0] if parsed else ""].append(row)
                retries = [
                    attempts
                    for attempts in await asyncio.gather(
                        *(self._work_chat(chat_rows) for chat_rows in by_chat.values())
                    )
                    if attempts
                ]
            except Exception:  # the database, most likely: the rows wait in it, try again
                failures += 1
                self._log.exception("Teams notification worker failed; retrying")
                await asyncio.sleep(min(2 ** (failures - 1), 60))
                continue
            failures = 0
            if retries:
                # Backoff by the failed rows' own attempts, not those of other chats' new rows.
                await asyncio.sleep(min(2 ** (min(retries) - 1), 60))
            elif len(rows) < PENDING_BATCH:
                # That was every stored row; a new one sets the event (maybe already has).
                await self._wake.wait()

    async def _work_chat(self, rows: list[StoredNotification]) -> int:
        """Work on one chat's rows in order; 0 when done, else the attempts of the row that
        failed and will be retried (the rows after it wait for it)."""
        for row in rows:
            try:
                await self._handle(row)
            except _RefusedOnMatrix as err:  # the core has told the room already
                self._log.error("Notification %s could not be bridged: %s", row.id, err.error)
            except (PermanentError, NotSupported) as err:  # Graph refused, e.g. 403
                self._log.error("Notification %s could not be bridged: %s", row.id, err)
                await self._lost(row, err)
            except Exception as err:  # may heal: Graph or the homeserver down for a while
                attempts = await self._store.record_attempt(row.id)
                if attempts < MAX_ATTEMPTS:
                    self._log.warning("Notification %s: %s; retrying", row.id, err,
                                      exc_info=not isinstance(err, BridgeError))  # fmt: skip
                    return attempts
                self._log.error("Dropping notification %s after %d attempts: %s", row.id,
                                attempts, err)  # fmt: skip
                await self._lost(row, err)
            await self._store.finish_notification(row.id)
        return 0

    async def _lost(self, row: StoredNotification, err: Exception) -> None:
        """Tell the chat's room that a change of it could not be bridged."""
        parsed = parse_message_resource(str(row.payload.get("resource", "")))
        if parsed is None:
            return
        try:
            await self._ctx.remote_message_lost(portal_key(parsed[0]), err)
        except Exception:
            self._log.exception("Could not report notification %s as lost", row.id)

    async def _handle(self, row: StoredNotification) -> None:
        item = row.payload
        link = self.net.tenant(row.tenant_id) or next(iter(self.net.tenants.values()))
        if "lifecycleEvent" in item:
            await self._lifecycle(link, str(item["lifecycleEvent"]))
            return
        parsed = parse_message_resource(str(item.get("resource", "")))
        if parsed is None:
            self._log.debug("Ignoring notification for %s", item.get("resource"))
            return
        chat_id, msg_id = parsed
        await self.net.remember_chat(chat_id, link.id)
        change = str(item.get("changeType", "updated"))
        if change == "created" and msg_id in self.net.sent:
            return  # the echo of a message sent from Matrix
        stored = await self._ctx.store.get_message(
            portal_key(chat_id).remote_id, message_id(msg_id)
        )
        # A retried row whose text reached Matrix may still lack its pictures: the core sends
        # only the parts it has not stored. (Messages from Matrix are never sent again.)
        resume = row.attempts > 0 and stored is not None and not stored.sender_id.startswith("@")
        if change == "created" and stored is not None and not resume:
            return  # bridged already (caught up, or an echo the core stored first)
        msg = await self._fetch(link, chat_id, msg_id)
        events = await self._events_for(chat_id, msg_id, change, msg, stored, link, resume)
        for event in events:
            # The row stays until this works; _work_chat reports it lost when it gives up.
            try:
                await self._ctx.deliver_remote_event(event, last_attempt=False)
            except (PermanentError, NotSupported) as err:
                raise _RefusedOnMatrix(err) from err
        edited = msg.last_edited_date_time if msg is not None else None
        if edited is not None and any(isinstance(event, RemoteEdit) for event in events):
            # Only now: an edit whose delivery failed is looked at again on the next try.
            await self._ctx.store.kv_set(_edit_marker(chat_id, msg_id), edited.isoformat())

    async def _fetch(self, link: TenantLink, chat_id: str, msg_id: str) -> ChatMessage | None:
        try:
            return (
                await link.app.chats.by_chat_id(chat_id).messages.by_chat_message_id(msg_id).get()
            )
        except APIError as err:
            if err.response_status_code == 404:
                return None
            raise as_bridge_error(err, f"read message {msg_id} of {chat_id}") from err
        except Exception as err:
            raise as_bridge_error(err, f"read message {msg_id} of {chat_id}") from err

    async def _lifecycle(self, link: TenantLink, event: str) -> None:
        self._log.info("Lifecycle event %s for tenant %s", event, link.id)
        if event == "reauthorizationRequired":
            await link.reauthorize(self._client_state)
        elif event == "subscriptionRemoved":
            await link.create_subscription(self._client_state)
        elif event == "missed":
            await self.catch_up()

    # --- deciding what changed -------------------------------------------------------------

    async def _events_for(
        self,
        chat_id: str,
        msg_id: str,
        change: str,
        msg: ChatMessage | None,
        stored: StoredMessage | None,
        link: TenantLink,
        resume: bool = False,
    ) -> list[RemoteEvent]:
        """What ``change`` to message ``msg_id`` (``msg`` as Graph has it now, ``stored`` as
        the bridge mapped it) means on Matrix."""
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
            return []
        if change == "created" or stored is None:
            if msg_id in self.net.sent or (stored is not None and not resume):
                return []
            message = await self._new_message(chat_id, msg, link)
            return [message] if message is not None else []
        events: list[RemoteEvent] = []
        edited = msg.last_edited_date_time
        marker = _edit_marker(chat_id, msg_id)
        if (
            edited is not None
            and not from_matrix
            and await self._ctx.store.kv_get(marker) != edited.isoformat()
        ):
            parts = message_parts(msg, self._hosted_fetcher(link, chat_id, msg_id))
            events.append(RemoteEdit(portal=key, target=target, sender=author[0], parts=parts))
        events += await self._reaction_syncs(chat_id, target, msg)
        return events

    async def _new_message(
        self, chat_id: str, msg: ChatMessage, link: TenantLink
    ) -> RemoteMessage | None:
        key = portal_key(chat_id)
        author = sender_of(msg)
        assert author is not None and msg.id is not None
        chat_info: ChatInfo | None = None
        portal = await self._ctx.store.get_portal(key.remote_id)
        if portal is None or not portal.mxid:
            # A tenant-wide subscription sees every chat of the agency: only chats with a
            # Matrix user logged in as one of their members are bridged.
            chat_info = await self._shared.get_chat_info(key)
            if not chat_info.matrix_users:
                self._log.debug("Chat %s has no bridged member; not bridged", chat_id)
                return None
        return RemoteMessage(
            portal=key,
            id=message_id(msg.id),
            sender=author[0],
            sender_info=UserInfo(name=author[1]) if author[1] else None,
            timestamp=timestamp_ms(msg),
            chat_info=chat_info,
            parts=message_parts(msg, self._hosted_fetcher(link, chat_id, msg.id)),
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
            data = await graph_call(f"download image of {msg_id}", item.content.get())
            return data or b""

        return fetch

    # --- catching up -----------------------------------------------------------------------

    async def catch_up(self) -> None:
        """Bridge the recent messages of every known chat that the bridge has not seen: after
        a restart, or when Graph says notifications were missed. Not polling: once per gap."""
        for portal in await self._ctx.store.list_portals():
            if not portal.mxid:
                continue
            try:
                await self._catch_up_chat(portal.remote_id)
            except Exception as err:
                self._log.warning("Catch-up of chat %s failed: %s", portal.remote_id, err)

    async def _catch_up_chat(self, chat_id: str) -> None:
        link = await self.net.tenant_for_chat(chat_id)
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            top=min(self.net.cfg.catch_up_messages, 50)
        )
        page = await graph_call(
            f"list messages of {chat_id}",
            link.app.chats.by_chat_id(chat_id).messages.get(
                RequestConfiguration(query_parameters=query)
            ),
        )
        messages = list(reversed((page.value if page is not None else None) or []))
        count = 0
        for msg in messages:
            if not msg.id or msg.deleted_date_time is not None or not is_bridgeable(msg):
                continue
            known = await self._ctx.store.get_message(RemoteChatID(chat_id), message_id(msg.id))
            if known is not None or msg.id in self.net.sent:
                continue
            event = await self._new_message(chat_id, msg, link)
            if event is not None:
                await self._ctx.queue_remote_event(event)
                count += 1
        if count:
            self._log.info("Caught up %d message(s) in chat %s", count, chat_id)


class _RefusedOnMatrix(Exception):
    """The core refused an event for good and has shown that in the room."""

    def __init__(self, error: BridgeError) -> None:
        super().__init__(str(error))
        self.error = error


def _edit_marker(chat_id: str, msg_id: str) -> str:
    """The key under which the last bridged edit time of a message is kept."""
    return f"edited:{chat_id}:{msg_id}"
