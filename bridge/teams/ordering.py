"""Notifications of one chat, kept in the order their messages were written.

Graph sends change notifications concurrently and promises no order: two messages written a
millisecond apart can reach the webhook the other way round (the emulator does the same), and
the remote inbox converts a portal's rows in the order they were stored. So the notifications
of a chat that arrive within ``window`` of the first are stored together, sorted by message id
(Teams chat message ids are the creation time in milliseconds), a message's ``created`` before
its ``updated`` before its ``deleted``, ties in arrival order. Each webhook call waits for its
own items to be stored (at most ``window`` longer than alone) before it answers ``202``.

Notifications further apart than ``window`` are stored as they come; a message that Graph
delivers later than that after a newer one still arrives, after it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bridge.portal.models import RemoteInput

WINDOW = 0.05
"""Seconds a chat's first notification waits for others that Graph sent at about the same
time; far below the 3 s within which Graph wants its answer."""
_CHANGE_RANK = {"created": 0, "updated": 1, "deleted": 2}

Accept = Callable[[RemoteInput], Awaitable[bool]]


def sort_key(msg_id: str, change: str) -> tuple[int, int]:
    """Message ids in time order (a non-numeric id sorts after them, in arrival order)."""
    order = int(msg_id) if msg_id.isdigit() else 1 << 62
    return order, _CHANGE_RANK.get(change, 1)


@dataclass(slots=True)
class _Batch:
    items: list[tuple[tuple[int, int, int], RemoteInput, asyncio.Future[None]]] = field(
        default_factory=list
    )


class ChatOrder:
    def __init__(self, accept: Accept, window: float = WINDOW) -> None:
        self._accept = accept
        self._window = window
        self._open: dict[str, _Batch] = {}
        self._arrivals = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, chat_id: str, key: tuple[int, int], item: RemoteInput) -> asyncio.Future[None]:
        """Queue ``item`` for storing; the future is done once it is stored (or failed)."""
        loop = asyncio.get_running_loop()
        batch = self._open.get(chat_id)
        if batch is None:
            batch = self._open[chat_id] = _Batch()
            task = loop.create_task(self._store(chat_id, batch), name=f"teams-order:{chat_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        done: asyncio.Future[None] = loop.create_future()
        batch.items.append(((*key, next(self._arrivals)), item, done))
        return done

    async def _store(self, chat_id: str, batch: _Batch) -> None:
        try:
            await asyncio.sleep(self._window)
        finally:
            del self._open[chat_id]  # what arrives from now on waits for the next batch
        failure: Exception | None = None
        entries = sorted(batch.items, key=lambda entry: entry[0])
        try:
            for _, item, done in entries:
                if failure is None:
                    try:
                        await self._accept(item)
                    except Exception as err:  # the rest is not stored either: Graph resends
                        failure = err
                if done.done():  # a webhook call whose client went away no longer waits
                    continue
                if failure is None:
                    done.set_result(None)
                else:
                    done.set_exception(failure)
        finally:
            for _, _, done in entries:
                done.cancel()  # only those still waiting: the connector is stopping
