"""Routing: Matrix events from the inbox to connectors, remote events to Matrix.

Both directions run through :class:`~bridge.core.queue.OrderedQueues` keyed by portal, so a
portal's events are handled one at a time in arrival order. Failures are retried with
exponential backoff inside the queue (order is kept); after the configured number of attempts
the event is parked in the dead-letter table and the person who sent it gets a notice.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bridge.core.adopt import RoomBridging
from bridge.core.clients import ClientRegistry, LoadedClient
from bridge.core.connector import (
    NetworkClient,
    NetworkConnector,
    SupportsPolicyDomain,
)
from bridge.core.encryption import ENCRYPTED, TRANSACTION_DATA_KINDS, RoomEncryption
from bridge.core.errors import BridgeError, NotSupported, PermanentError
from bridge.core.events import RemoteEvent, RemoteReceipt, RemoteTyping
from bridge.core.failure_notices import FailureNotices
from bridge.core.federation import FederationPolicy, remote_domain
from bridge.core.ghost_invites import GhostInvites
from bridge.core.ghost_presence import GhostPresence
from bridge.core.ids import (
    LoginID,
    NetworkID,
    PortalKey,
    RemoteUserID,
)
from bridge.core.matrix import MatrixAPI
from bridge.core.matrix_events import MatrixEventHandler
from bridge.core.metrics import Metrics
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.core.queue import OrderedQueues
from bridge.core.remote_inbox import RemoteInbox
from bridge.core.retry import RetryPolicy, Withdrawn, until_done
from bridge.core.stored_queue import StoredQueue
from bridge.portal.models import InboxItem, InboxRow, Portal, RemoteInput
from bridge.portal.store import Store

CommandHandler = Callable[[str, str, dict[str, Any]], Awaitable[None]]
"""(room_id, sender, event) for messages in a management room and invites of the bot."""

INBOX_BATCH = 500
POLL_SECONDS = 2.0
"""How often an idle dispatcher (and the remote inbox) looks for rows nobody handed over: a
dead letter an operator retried from the command line while the bridge runs."""
# Reactions are left out: Element sends them in the clear even in encrypted rooms.
_REQUIRE_ENCRYPTED = frozenset({"m.room.message", "m.sticker"})
_MEDIA_MSGTYPES = {"m.image", "m.file", "m.audio", "m.video"}
_REPLY_FALLBACK = re.compile(r"^(> .*\n)+\n", re.MULTILINE)
_CONTENT_TYPES = frozenset({"m.room.message", "m.sticker", "m.reaction"})
"""What a Matrix user says in a portal: sent to the network only if the policy connects them."""


_HTML_REPLY_FALLBACK = re.compile(r"<mx-reply>.*?</mx-reply>", re.DOTALL)


class Router:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixAPI,
        portals: PortalManager,
        connectors: dict[NetworkID, NetworkConnector],
        permissions: Permissions,
        metrics: Metrics,
        retry: RetryPolicy,
        queue_size: int,
        domain: str,
        log: logging.Logger,
        federation: FederationPolicy | None = None,
    ) -> None:
        self._store = store
        self._matrix = matrix
        self.portals = portals
        self._connectors = connectors
        self._permissions = permissions
        self._federation = federation or FederationPolicy(None, domain)
        self._metrics = metrics
        self._retry = retry
        self._domain = domain
        self._log = log
        self.clients = ClientRegistry(connectors, metrics, log)
        self.ghost_presence = GhostPresence(matrix, store, log)
        self._invites = GhostInvites(
            store=store, matrix=matrix, portals=portals, connectors=connectors,
            permissions=permissions, federation=self._federation, client_for=self.client_for,
            policy_domain=self._policy_domain, log=log,
        )  # fmt: skip
        self._events = MatrixEventHandler(
            store=store, matrix=matrix, connectors=connectors, clients=self.clients,
            is_puppet=self.is_any_puppet, permissions=permissions,
        )  # fmt: skip
        self.queues = OrderedQueues(
            maxsize=queue_size, log=log.getChild("queue"), observe_wait=metrics.queue_wait.observe
        )
        self.notices = FailureNotices(matrix=matrix, store=store, portals=portals, log=log)
        self.remote = RemoteInbox(
            store=store.remote_inbox, queues=self.queues, portals=portals, clients=self.clients,
            retry=retry, metrics=metrics, notice=self.notices.remote,
            log=log.getChild("remote"), memory_rows=queue_size,
        )  # fmt: skip
        self._inbox_rows: StoredQueue[str | None, InboxRow] = StoredQueue(
            name="inbox", queues=self.queues, run=self._run_inbox_row,
            reread=store.pending_inbox_of_room, row_id=lambda row: row.id, retry=retry,
            log=log.getChild("inbox"), limit=queue_size,
        )  # fmt: skip
        self.bridging = RoomBridging(
            store=store, matrix=matrix, portals=portals, clients=self.clients,
            connectors=connectors, permissions=permissions, domain=domain,
            log=log.getChild("bridging"), federation=self._federation,
        )  # fmt: skip
        self.command_handler: CommandHandler | None = None
        self._inbox_wakeup = asyncio.Event()
        self._inbox_task: asyncio.Task[None] | None = None
        self._inbox_handed: list[InboxRow] = []
        self._inbox_read_store = True  # the backlog of a previous run is only in the store
        self._remote_poll_task: asyncio.Task[None] | None = None
        self._presence_task: asyncio.Task[None] | None = None
        self.poll_seconds = POLL_SECONDS

    # --- clients (CoreServices for ConnectorContext) --------------------------------------------

    def add_client(
        self, network: NetworkID, client: NetworkClient, user_mxid: str | None = None
    ) -> LoadedClient:
        return self.clients.add(network, client, user_mxid)

    def remove_client(self, network: NetworkID, login_id: LoginID) -> LoadedClient | None:
        return self.clients.remove(network, login_id)

    def set_client_state(
        self, network: NetworkID, login_id: LoginID, *, connected: bool, message: str
    ) -> None:
        self.clients.set_state(network, login_id, connected=connected, message=message)

    def client_for(self, network: NetworkID, login: LoginID, user_mxid: str | None) -> LoadedClient:
        return self.clients.client_for(network, login, user_mxid)

    async def matrix_profile(self, mxid: str) -> tuple[str | None, bytes | None, str]:
        return await self._matrix.get_profile(mxid)

    async def set_ghost_presence(
        self, network: NetworkID, user: RemoteUserID, presence: str, status: str | None
    ) -> None:
        await self.ghost_presence.set(network, user, presence, status)

    async def adopt_matrix_room(self, key: PortalKey, alias: str) -> Portal | None:
        return await self.bridging.adopt_alias(key, alias)

    async def matrix_history(self, room_id: str, limit: int) -> list[tuple[str, str, str, int]]:
        names = await self._matrix.joined_members(room_id)
        return [
            (event_id, names.get(sender, sender), body, ts)
            for event_id, sender, body, ts in await self._matrix.recent_messages(room_id, limit)
        ]

    async def matrix_members(self, room_id: str) -> dict[str, str]:
        members = await self._matrix.joined_members(room_id)
        return {mxid: name for mxid, name in members.items() if not self.is_any_puppet(mxid)}

    async def matrix_power_levels(self, room_id: str) -> tuple[dict[str, Any], list[str]]:
        return await self._matrix.power_levels(room_id)

    async def matrix_membership(self, room_id: str, mxid: str) -> str | None:
        return await self._matrix.membership(room_id, mxid)

    async def matrix_has_devices(self, mxid: str) -> bool:
        return await self._matrix.has_devices(mxid)

    # --- network → Matrix -----------------------------------------------------------------------

    async def submit_remote_event(
        self, network: NetworkID, event: RemoteEvent, *, wait: bool, last_attempt: bool = True
    ) -> None:
        kind = type(event).__name__
        if isinstance(event, RemoteTyping | RemoteReceipt) and not wait:
            self._offer_fleeting(network, event, kind)
            return
        done: asyncio.Future[None] | None = (
            asyncio.get_running_loop().create_future() if wait else None
        )

        async def job() -> None:
            try:
                # In memory only, so bounded: a connector that keeps the event itself gets the
                # error back and offers it again (SMTP 451); see accept_remote for the rest.
                await self._with_retries(
                    f"{kind} in {event.portal}",
                    lambda: self._handle_remote(network, event),
                    bounded=True,
                )
            except Exception as err:
                self._metrics.remote_events.labels(network, kind, "failed").inc()
                if done is not None and not last_attempt and not _permanent(err):
                    # The waiting connector refuses the message for now (SMTP 451, a retried
                    # notification) and the network offers it again: nothing is lost yet.
                    self._log.warning("Handed %s in %s back to %s: %s", kind, event.portal,
                                      network, err)  # fmt: skip
                else:
                    self._metrics.dead_letters.labels(network).inc()
                    self._log.error("Gave up on %s in %s: %s", kind, event.portal, err)
                    await self.notices.remote(event.portal, err)
                if done is not None and not done.done():
                    done.set_exception(err)
            else:
                self._metrics.remote_events.labels(network, kind, "ok").inc()
                if done is not None and not done.done():
                    done.set_result(None)

        await self.queues.put(str(event.portal), job)
        if done is not None:
            await done

    def _offer_fleeting(self, network: NetworkID, event: RemoteEvent, kind: str) -> None:
        """Typing and read receipts: worth one try in the portal's turn, never a wait, a
        retry, a notice or a dead letter. While the homeserver is away they would only hold
        the portal's messages up; a full portal drops them."""

        async def job() -> None:
            try:
                await self._handle_remote(network, event)
            except Exception as err:
                self._metrics.remote_events.labels(network, kind, "dropped").inc()
                self._log.debug("Dropped %s in %s: %s", kind, event.portal, err)
            else:
                self._metrics.remote_events.labels(network, kind, "ok").inc()

        if not self.queues.offer(str(event.portal), job):
            self._metrics.remote_events.labels(network, kind, "dropped").inc()

    async def accept_remote(self, item: RemoteInput) -> bool:
        return await self.remote.accept(item)

    async def _handle_remote(self, network: NetworkID, event: RemoteEvent) -> None:
        loaded = self.client_for(network, event.login, None)
        await self.portals.handle(event, loaded.client)

    async def remote_message_lost(self, network: NetworkID, key: PortalKey, err: Exception) -> None:
        self._metrics.dead_letters.labels(network).inc()
        self._log.error("%s gave up on a message in %s: %s", network, key, err)
        await self.notices.remote(key, err)

    # --- Matrix → network: the inbox --------------------------------------------------------------

    def notify_inbox(self, rows: Sequence[InboxRow] | None = None) -> None:
        """Rows were committed to the inbox: ``rows`` themselves, in id order, right after
        their commit; ``None`` to make the dispatcher read the store for them."""
        if rows is None:
            self._inbox_read_store = True
        else:
            self._inbox_handed.extend(rows)
        self._inbox_wakeup.set()

    def note_key_counts(self, items: Sequence[InboxItem]) -> None:
        if self._matrix.encryption is not None:
            for item in items:
                self._matrix.encryption.note_key_counts(item.kind, item.payload)

    def start(self) -> None:
        self._inbox_task = asyncio.create_task(self._dispatch_inbox(), name="inbox")
        self._remote_poll_task = asyncio.create_task(
            self.remote.poll_forever(self.poll_seconds), name="remote-inbox-poll"
        )
        self._presence_task = asyncio.create_task(
            self.ghost_presence.refresh_forever(), name="ghost-presence"
        )

    async def stop(self) -> None:
        tasks = [
            t
            for t in (self._inbox_task, self._remote_poll_task, self._presence_task)
            if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.queues.close()
        await self.remote.close()

    async def _dispatch_inbox(self) -> None:
        """Move inbox rows into portal queues, oldest first.

        On start this reads the backlog from the store until it is drained; from then on the
        rows the appservice handed over after committing them are queued without reading them
        back. A row that was both read and handed over is queued once (ids only grow).

        Rows nobody hands over (a dead letter retried from the command line) are read from the
        store too: when idle for ``poll_seconds``, and when the handed rows skip an id, since
        such a row may be in the gap (its id is above every row committed before it, see
        :mod:`bridge.portal.dead_letters`).
        """
        last_id = 0
        while True:
            self._inbox_wakeup.clear()
            handed = not self._inbox_read_store
            if not handed:
                # Whatever is handed over or notified from now on is either in this read or
                # kept for the next round.
                self._inbox_handed, self._inbox_read_store = [], False
                try:
                    rows = await self._store.pending_inbox(after_id=last_id, limit=INBOX_BATCH)
                except Exception:
                    self._log.exception("Reading the inbox failed; retrying in 5 s")
                    self._inbox_read_store = True
                    await asyncio.sleep(5)
                    continue
                if len(rows) == INBOX_BATCH:  # more to read
                    self._inbox_read_store = True
            else:
                rows, self._inbox_handed = self._inbox_handed, []
            for row in rows:
                if row.id <= last_id:
                    continue
                if handed and row.id != last_id + 1:
                    self._inbox_read_store = True  # the gap is read with what follows it
                    break
                self._inbox_rows.add(row.room_id, await self._queue_key(row), row)
                last_id = row.id
            if not self._inbox_read_store and not self._inbox_handed:
                try:
                    await asyncio.wait_for(self._inbox_wakeup.wait(), self.poll_seconds)
                except TimeoutError:
                    self._inbox_read_store = True

    def is_own_echo(self, event: dict[str, Any]) -> bool:
        """An event the bridge itself caused (the bot, or a ghost in a portal of its own
        network), recognised before it is stored. Other networks' ghosts are relayed."""
        sender = event.get("sender")
        if sender == self._matrix.bot_mxid:
            return True
        key = self.portals.room_keys.get(str(event.get("room_id")))
        return (
            key is not None and isinstance(sender, str) and self._is_own_puppet(key.network, sender)
        )

    async def _queue_key(self, row: InboxRow) -> str:
        if row.room_id is None:
            return "global"
        key = self.portals.room_keys.get(row.room_id)
        if key is None:
            portal = await self.portals.portal_by_room(row.room_id)
            if portal is None:
                return f"room:{row.room_id}"
            key = self.portals.room_keys[row.room_id] = portal.key
        return str(key)

    async def _run_inbox_row(self, row: InboxRow) -> None:
        etype = str(row.payload.get("type", row.kind))
        try:
            network = await self._with_retries(
                f"{etype} {row.event_id or ''} in {row.room_id}",
                lambda: self._handle_inbox_row(row),
                on_failure=lambda err: self._store.record_inbox_failure(row.id, str(err)),
                first_attempt=row.attempts + 1,
                still_wanted=lambda: self._store.inbox_row_exists(row.id),
            )
        except Withdrawn:
            self._log.info("%s %s was set aside by an operator", etype, row.event_id or row.id)
        except NotSupported as err:
            self._metrics.matrix_events.labels(etype, "", "unsupported").inc()
            if await self._store_write(
                f"removing {etype}", lambda: self._store.finish_inbox(row.id)
            ):
                await self.notices.of_row(row, err)
        except Exception as err:
            self._metrics.matrix_events.labels(etype, "", "failed").inc()
            self._metrics.dead_letters.labels("matrix").inc()
            reason = str(err)
            if await self._store_write(
                f"parking {etype}", lambda: self._store.park_inbox(row.id, reason)
            ):
                self._log.error("Parked %s %s after failures: %s", etype, row.event_id, err)
                await self.notices.of_row(row, err)
        else:
            self._metrics.matrix_events.labels(etype, network or "", "ok").inc()
            await self._store_write(f"removing {etype}", lambda: self._store.finish_inbox(row.id))

    async def _store_write(self, what: str, op: Callable[[], Awaitable[Any]]) -> bool:
        """A store write after handling a row: waits out a database outage as handling does.
        False if it failed otherwise; the row stays stored and the next start offers it again
        (a redelivered event is deduplicated by the message table)."""
        try:
            await until_done(what, op, self._retry, self._log)
        except Exception as err:
            self._log.error("%s failed; it is tried again after a restart: %s", what, err)
            return False
        return True

    async def _with_retries(
        self,
        what: str,
        action: Callable[[], Awaitable[Any]],
        *,
        on_failure: Callable[[Exception], Awaitable[int]] | None = None,
        first_attempt: int = 1,
        bounded: bool = False,
        still_wanted: Callable[[], Awaitable[bool]] | None = None,
    ) -> Any:
        return await until_done(
            what, action, self._retry, self._log, on_failure=on_failure,
            first_attempt=first_attempt, bounded=bounded, still_wanted=still_wanted,
            count_error=lambda err: self._metrics.errors.labels(
                "router", type(err).__name__
            ).inc(),
        )  # fmt: skip

    async def delivery_failed(self, network: NetworkID, event_id: str, err: BridgeError) -> None:
        message = await self._store.get_message_by_mxid(event_id)
        if message is None or message.network != network:
            self._log.warning("Delivery failure for unknown event %s: %s", event_id, err)
            return
        self._log.warning(
            "Delivery of %s to %s failed after it was sent: %s", event_id, network, err
        )
        await self.notices.failed(message.room_id, event_id, message.sender_id, err)

    # --- Matrix → network: one event --------------------------------------------------------------

    def _is_own_puppet(self, network: NetworkID, mxid: str) -> bool:
        return mxid == self._matrix.bot_mxid or self.portals.ghost_names.owns(network, mxid)

    def is_any_puppet(self, mxid: str) -> bool:
        return mxid == self._matrix.bot_mxid or any(
            self._is_own_puppet(n, mxid) for n in self._connectors
        )

    async def _handle_inbox_row(self, row: InboxRow) -> NetworkID | None:
        if row.kind == "ephemeral" and row.payload.get("type") == "m.presence":
            await self._events.handle_presence(row.payload)  # of a user, in no room
            return None
        if row.kind == "ephemeral":
            room_id = row.payload.get("room_id")
            portal = (
                await self.portals.portal_by_room(room_id) if isinstance(room_id, str) else None
            )
            if portal is None:
                return None
            await self._events.handle_ephemeral(portal, row.payload)
            return portal.network
        encryption = self._matrix.encryption
        if row.kind in TRANSACTION_DATA_KINDS:
            if encryption is not None:
                await encryption.handle_transaction_data(row.kind, row.payload)
            return None
        if row.kind != "pdu":
            return None
        event = row.payload
        if "state_key" in event:
            await self._matrix.update_state_cache(event)
            if encryption is not None:
                await encryption.handle_state_event(event)
        sender = str(event.get("sender", ""))
        if sender == self._matrix.bot_mxid:
            return None
        portal = await self.portals.portal_by_room(row.room_id or "")
        if event.get("type") == ENCRYPTED:
            if encryption is None:
                if portal is None:
                    return None
                raise PermanentError(
                    "encrypted event with encryption off",
                    user_message="This hub has encryption turned off, so it cannot read "
                    "encrypted messages; ask its operator to set encryption.allow.",
                )
            event = await encryption.decrypt(event)  # the one place events are decrypted
        elif portal is not None and _refused_in_clear(encryption, event):
            raise PermanentError(
                "unencrypted event in a hub that requires encryption",
                user_message="This hub only bridges encrypted messages; turn on "
                "encryption in this room and send it again.",
            )
        if portal is None:
            if row.room_id is not None and not self.is_any_puppet(sender):
                return await self._handle_non_portal_event(row.room_id, sender, event)
            return None
        if self._is_own_puppet(portal.network, sender):
            return portal.network  # our own echo
        if self._permissions.level(sender) < Permissions.RELAY:
            if _own_join(event) and getattr(
                self._connectors.get(portal.network), "guards_joins", False
            ):
                await self._events.handle(portal, event)  # a chat for its members only: guarded
                return portal.network
            self._log.info(
                "Ignoring %s from %s in %s: not permitted", event.get("type"), sender, portal.mxid
            )
            return portal.network
        if (invited := self._invited_ghost(portal.network, event)) is not None:
            await self._invites.to_portal(portal, sender, invited)
            return portal.network
        if event.get("type") in _CONTENT_TYPES and (
            refused := self._federation.refusal(
                portal.network, await self._policy_domain(portal), sender, entry="matrix message"
            )
        ):
            raise PermanentError(str(refused), user_message=refused.user_message)
        await self._events.handle(portal, event)
        return portal.network

    async def _policy_domain(self, portal: Portal, user: RemoteUserID | None = None) -> str:
        """The remote side of ``portal`` (or of ``user`` in it) as the federation policy names
        it: the connector's own answer (a Teams chat's tenant), else the domain of the id."""
        connector = self._connectors.get(portal.network)
        if isinstance(connector, SupportsPolicyDomain):
            return await connector.policy_domain(portal.key)
        return remote_domain(user if user is not None else portal.remote_id)

    def _invited_ghost(self, network: NetworkID, event: dict[str, Any]) -> RemoteUserID | None:
        if event.get("type") != "m.room.member":
            return None
        if event.get("content", {}).get("membership") != "invite":
            return None
        return self.portals.ghost_names.parse(network, str(event.get("state_key", "")))

    async def _handle_non_portal_event(
        self, room_id: str, sender: str, event: dict[str, Any]
    ) -> NetworkID | None:
        """Invites of the bot or a ghost, and commands, in rooms that are not portals."""
        etype = event.get("type")
        target = str(event.get("state_key", ""))
        invited = (
            etype == "m.room.member" and event.get("content", {}).get("membership") == "invite"
        )
        if invited and target != self._matrix.bot_mxid:
            for network in self._connectors:
                remote_user = self.portals.ghost_names.parse(network, target)
                if remote_user is not None:
                    await self._invites.to_room(room_id, sender, network, target, remote_user)
                    return network
            return None
        if (invited or etype == "m.room.message") and self.command_handler is not None:
            await self.command_handler(room_id, sender, event)
        return None


def _own_join(event: dict[str, Any]) -> bool:
    """An entry into the room (not a join → join: a name or avatar changed)."""
    was = ((event.get("unsigned") or {}).get("prev_content") or {}).get("membership")
    return (
        event.get("type") == "m.room.member"
        and event.get("state_key") == event.get("sender")
        and (event.get("content") or {}).get("membership") == "join"
        and was != "join"
    )


def _refused_in_clear(encryption: RoomEncryption | None, event: dict[str, Any]) -> bool:
    """An unencrypted message in a portal of a hub with ``encryption.require``."""
    return encryption is not None and encryption.require and event.get("type") in _REQUIRE_ENCRYPTED


def _permanent(err: Exception) -> bool:
    """Whether ``err`` refuses the event for good; anything else may heal on a later try
    (unexpected exceptions are retried like a TransientError, see ``_with_retries``)."""
    return isinstance(err, PermanentError | NotSupported)
