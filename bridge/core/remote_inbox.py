"""Network → Matrix, durably: a connector's input is stored before it is acknowledged.

``accept`` writes the input to the remote inbox (one round trip) and queues it on its portal
without waiting (:mod:`bridge.core.stored_queue`); once it returns, the connector may acknowledge to its network (XEP-0184 receipt, LMTP 250,
Graph 202). Inside the portal's ordered queue the connector's converter turns the stored input
into remote events, the portal manager sends them, and the row is deleted once Matrix has them
all. While the homeserver, the database or the network is away the portal waits (capped
backoff) and resumes in order; only a permanent refusal becomes a dead letter, with a notice in
the room. An input converted into several events (a catch-up) is not stopped by one refused
event: the others are sent first, then the input becomes the dead letter. On start, the rows of a previous run are queued before any connector starts, so they
reach Matrix before anything newer of the same portal. Rows that someone else put in the table
(a dead letter an operator retried from the command line) are found by :meth:`poll`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from bridge.core.clients import ClientRegistry
from bridge.core.connector import SupportsRemoteInput
from bridge.core.errors import BridgeError, NotFound, NotSupported, PermanentError, TransientError
from bridge.core.ids import PortalKey
from bridge.core.metrics import Metrics
from bridge.core.portals import PortalManager
from bridge.core.queue import OrderedQueues
from bridge.core.retry import RetryPolicy, Withdrawn, until_done
from bridge.core.stored_queue import StoredQueue
from bridge.portal.models import RemoteInput
from bridge.portal.remote_inbox import RemoteInboxRow, RemoteInboxStore

_T = TypeVar("_T")
FailureNotice = Callable[[PortalKey, Exception], Awaitable[None]]
RECOVERY_BATCH = 500
REMOVE_AFTER = 0.5
"""Seconds a delivered row stays before it is removed with the others delivered meanwhile."""
REMOVE_ROWS = 64
CLOSE_WAIT = 5.0
"""Delivered rows removed at once without waiting (far below what the queue remembers)."""


class RemoteInbox:
    def __init__(
        self,
        *,
        store: RemoteInboxStore,
        queues: OrderedQueues,
        portals: PortalManager,
        clients: ClientRegistry,
        retry: RetryPolicy,
        metrics: Metrics,
        notice: FailureNotice,
        log: logging.Logger,
        memory_rows: int = 256,
    ) -> None:
        self._store = store
        self._portals = portals
        self._clients = clients
        self._retry = retry
        self._metrics = metrics
        self._notice = notice
        self._log = log
        self.started = False
        """Set once every connector has loaded its clients: a client missing after that is a
        login that is gone, not one still loading."""
        self._rows: StoredQueue[PortalKey, RemoteInboxRow] = StoredQueue(
            name="remote inbox", queues=queues, run=self._run,
            reread=self._reread,
            row_id=lambda row: row.id, retry=retry, log=log, limit=memory_rows,
            after_batch=self._remove_delivered,
        )  # fmt: skip
        self._delivered: list[int] = []
        """Rows on Matrix, removed together :data:`REMOVE_AFTER` later (or once there are
        :data:`REMOVE_ROWS`): one statement for many messages, also when they come one at a
        time. Until then the queue knows them (a poll or a read back skips them); a crash
        before that offers them again after the restart, and the message table knows them."""
        self._removing: asyncio.Task[None] | None = None
        self._polled_up_to = 0
        self._polling = asyncio.Lock()

    async def accept(self, item: RemoteInput) -> bool:
        """Store ``item`` and queue it; False if the same input is already pending. Raises if
        it could not be stored: the connector must then refuse it (temporarily). Never waits
        for the portal's queue."""
        row = await self._store.add(item)
        if row is None:
            self._log.debug(
                "%s %s in %s is already pending", item.kind, item.dedupe_id, item.portal
            )
            return False
        self._queue(row)
        return True

    async def recover(self) -> int:
        """Queue the rows a previous run left, oldest first; returns how many."""
        last_id, count = 0, 0
        while rows := await self._store.pending(after_id=last_id, limit=RECOVERY_BATCH):
            for row in rows:
                self._queue(row)
            last_id, count = rows[-1].id, count + len(rows)
        self._polled_up_to = max(self._polled_up_to, last_id)
        if count:
            self._log.info("Resuming %d network events stored before the restart", count)
        return count

    async def poll(self) -> int:
        """Queue the rows this process did not put in the table (a dead letter an operator
        retried); returns how many. One indexed read of the rows above the last poll's.

        Such a row's id is above every row committed before it (see
        :mod:`bridge.portal.dead_letters`), so above what the last poll saw; rows ``accept``
        stored are known to the queue (or left to a spilled portal's read back)."""
        async with self._polling:
            count = 0
            while rows := await self._store.pending(
                after_id=self._polled_up_to, limit=RECOVERY_BATCH
            ):
                for row in rows:
                    if self._rows.knows(row.id) or self._rows.is_spilled(row.input.portal):
                        continue
                    self._log.info("Queuing %s %d found in the remote inbox (put back "
                                   "by an operator)", row.input.kind, row.id)  # fmt: skip
                    count += 1
                    self._queue(row)
                self._polled_up_to = rows[-1].id
                if len(rows) < RECOVERY_BATCH:
                    break
            return count

    async def poll_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll()
            except Exception as err:  # the database is away: the next round tries again
                self._log.warning("Looking for put-back network events failed: %s", err)

    def _queue(self, row: RemoteInboxRow) -> None:
        self._rows.add(row.input.portal, str(row.input.portal), row)

    async def _run(self, row: RemoteInboxRow) -> None:
        item = row.input
        what = f"{item.kind} {item.dedupe_id or row.id} in {item.portal}"
        try:
            await until_done(
                what, lambda: self._deliver(row), self._retry, self._log,
                on_failure=lambda err: self._store.record_failure(row.id, str(err)),
                first_attempt=row.attempts + 1,
                count_error=lambda err: self._metrics.errors.labels(
                    "remote_inbox", type(err).__name__
                ).inc(),
                still_wanted=lambda: self._store.exists(row.id),
            )  # fmt: skip
        except Withdrawn:
            self._log.info("%s was set aside by an operator; going on with the next", what)
            return
        except Exception as err:
            self._metrics.remote_events.labels(row.network, item.kind, "failed").inc()
            self._metrics.dead_letters.labels(row.network).inc()
            reason = str(err)
            try:
                dead_id = await self._store_op(
                    f"parking {what}", lambda: self._store.park(row, reason)
                )
            except Exception as park_err:  # the row stays; the next start tries it again
                self._log.error("Could not park %s: %s", what, park_err)
                return
            self._log.error("Gave up on %s (dead letter %d): %s", what, dead_id, err)
            await self._notice(item.portal, err)
            return
        self._metrics.remote_events.labels(row.network, item.kind, "ok").inc()
        self._delivered.append(row.id)

    async def _reread(self, key: PortalKey, limit: int) -> list[RemoteInboxRow]:
        """A spilled portal's next rows; what was delivered goes first, or it would be read."""
        await self.remove_delivered()
        return await self._store.pending_for(key, limit)

    async def _remove_delivered(self) -> None:
        """After a drain job: remove the delivered rows now if there are many, else soon."""
        if len(self._delivered) >= REMOVE_ROWS:
            await self.remove_delivered()
        elif self._delivered and self._removing is None:
            self._removing = asyncio.create_task(self._remove_later(), name="remote-inbox-remove")

    async def _remove_later(self) -> None:
        """Known as ``_removing`` until its statement is done, so a stop can wait for it; the
        rows delivered meanwhile go with the next round."""
        try:
            while self._delivered:
                await asyncio.sleep(REMOVE_AFTER)
                await self.remove_delivered()
        finally:
            if self._removing is asyncio.current_task():
                self._removing = None

    async def close(self) -> None:
        """On stop: remove what was delivered (a restart would otherwise convert it again),
        unless the database is away (then the restart's conversion finds it on Matrix)."""
        removing, self._removing = self._removing, None
        if removing is not None:  # asleep or mid-statement: its rows come back to the list
            removing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await removing
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_WAIT):
                await self.remove_delivered()

    async def remove_delivered(self) -> None:
        delivered, self._delivered = self._delivered, []
        if not delivered:
            return
        try:
            await self._store_op(
                f"removing {len(delivered)} delivered rows",
                lambda: self._store.finish_many(delivered),
            )
        except asyncio.CancelledError:  # a stop came in the middle: close() tries them again
            self._delivered[:0] = delivered
            raise
        except Exception as err:  # sent; a redelivery after a restart is deduplicated
            self._log.warning("Could not remove delivered rows from the remote inbox: %s", err)

    async def _store_op(self, what: str, op: Callable[[], Awaitable[_T]]) -> _T:
        """A store write after delivery: waits out a database outage, like delivery does."""
        result: _T = await until_done(what, op, self._retry, self._log)
        return result

    async def _deliver(self, row: RemoteInboxRow) -> None:
        item = row.input
        try:
            loaded = self._clients.client_for(item.portal.network, item.login, None)
        except NotSupported as err:
            if not self.started:
                raise TransientError(f"{item.portal.network} is still starting") from err
            raise
        if not loaded.features.remote_input:
            raise NotSupported(f"{item.portal.network} client cannot convert stored input")
        client = cast(SupportsRemoteInput, loaded.client)
        events = await client.convert_remote(item)
        refused: list[BridgeError] = []
        for event in events:
            try:
                await self._portals.handle(event, loaded.client)
            except (NotSupported, NotFound, PermanentError) as err:
                if len(events) == 1:
                    raise  # the input's own failure: a dead letter
                # One refused event of a batch (a catch-up's) does not cost the others.
                self._log.error(
                    "Gave up on %s of %s in %s: %s; the rest of it goes on",
                    type(event).__name__, item.kind, item.portal, err,
                )  # fmt: skip
                refused.append(err)
        if refused:
            # The rest is in Matrix; the input still becomes a dead letter (with its notice),
            # so an operator can retry it once the cause is fixed: what was sent is recognised.
            raise refused[0]
