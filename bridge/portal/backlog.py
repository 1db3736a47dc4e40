"""What is waiting: events accepted and not yet delivered, and the dead letters, per direction
and network. Read when metrics are scraped (a few aggregate queries on small tables)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .store import Store

TO_NETWORK = "matrix_to_network"
"""Matrix events in the appservice inbox, on their way to a network."""
TO_MATRIX = "network_to_matrix"
"""Network input in the remote inbox, on its way to Matrix."""
NO_NETWORK = ""
"""Label of inbox rows and dead letters of rooms that are not portals (management rooms,
to-device events, rooms the bridge no longer knows)."""


@dataclass(frozen=True, slots=True)
class Pending:
    count: int
    oldest_ms: int | None
    """``received_at`` of the oldest, milliseconds since the epoch."""


@dataclass(slots=True)
class Backlog:
    to_network: dict[str, Pending] = field(default_factory=dict)
    """By the network of the portal the room belongs to."""
    to_matrix: dict[str, Pending] = field(default_factory=dict)
    dead_letters: dict[tuple[str, str], int] = field(default_factory=dict)
    """(direction, network) → dead letters kept."""


async def read_backlog(store: Store) -> Backlog:
    backlog = Backlog()
    rows = await store.database.fetch(
        "SELECT COALESCE(p.network, '') AS network, COUNT(*) AS n,"
        " MIN(i.received_at) AS oldest"
        " FROM inbox i LEFT JOIN portal p ON p.mxid = i.room_id"
        " GROUP BY COALESCE(p.network, '')"
    )
    for row in rows:
        oldest = row["oldest"]
        backlog.to_network[str(row["network"])] = Pending(
            int(row["n"]), int(oldest) if oldest is not None else None
        )
    for network, (count, oldest) in (await store.remote_inbox.depth()).items():
        backlog.to_matrix[network] = Pending(count, int(oldest) if oldest is not None else None)
    # A dead letter without a network came from Matrix (an inbox row): its room tells which.
    rows = await store.database.fetch(
        "SELECT d.network AS network, p.network AS portal_network, COUNT(*) AS n"
        " FROM dead_letter d LEFT JOIN portal p ON d.network IS NULL AND p.mxid = d.room_id"
        " GROUP BY d.network, p.network"
    )
    for row in rows:
        if row["network"] is None:
            key = (TO_NETWORK, str(row["portal_network"] or NO_NETWORK))
        else:
            key = (TO_MATRIX, str(row["network"]))
        backlog.dead_letters[key] = backlog.dead_letters.get(key, 0) + int(row["n"])
    return backlog
