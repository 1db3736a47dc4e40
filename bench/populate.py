"""Filling a store with many portals and ghosts, straight through the database.

The schema comes from :meth:`Store.open` (the bridge's own migrations); the rows go in with
batched ``executemany`` on the store's database, which is far faster than one ``save_*`` call
per row and produces the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from mautrix.util.async_db import Connection

from bench.config import DOMAIN

if TYPE_CHECKING:
    from bridge.portal.store import Store

BATCH = 5000
NETWORK = "reference"

_PORTAL_SQL = (
    "INSERT INTO portal (network, remote_id, receiver, mxid, name, topic, is_direct, metadata)"
    " VALUES ($1, $2, '', $3, $4, $5, false, '{}')"
)
_GHOST_SQL = (
    "INSERT INTO ghost (network, remote_id, mxid, name, metadata) VALUES ($1, $2, $3, $4, '{}')"
)


def _batches(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def _portals(count: int) -> Iterator[tuple[Any, ...]]:
    for i in range(count):
        yield (NETWORK, f"scale-chat-{i}", f"!scale{i}:{DOMAIN}", f"Chat {i}", "A scaled chat")


def _ghosts(count: int) -> Iterator[tuple[Any, ...]]:
    for i in range(count):
        yield (NETWORK, f"scale-user-{i}", f"@reference_scale-user-{i}:{DOMAIN}", f"User {i}")


async def _open(url: str) -> Store:
    # Imported late: the run's code snapshot (bench.source) must be on sys.path first.
    from bridge.portal.store import Store

    return await Store.open(url)


async def migrate(url: str) -> None:
    """Create the bridge's schema in an empty database."""
    store = await _open(url)
    await store.close()


async def populate(url: str, portals: int, ghosts: int) -> float:
    """Add ``portals`` portals and ``ghosts`` ghosts; returns the seconds it took."""
    began = time.perf_counter()
    store = await _open(url)
    try:
        conn: Connection
        async with store.database.acquire() as conn:
            for sql, rows in ((_PORTAL_SQL, _portals(portals)), (_GHOST_SQL, _ghosts(ghosts))):
                for batch in _batches(rows, BATCH):
                    async with conn.transaction():
                        await conn.executemany(sql, batch)
    finally:
        await store.close()
    return time.perf_counter() - began
