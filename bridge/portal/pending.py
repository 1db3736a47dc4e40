"""What waits in the two inboxes, for operators, and a way to set one row aside.

A row waits while its homeserver, database or network is away (:mod:`bridge.core.retry`), for
ever if that never comes back: a decommissioned XMPP server, a room the homeserver lost. Its
portal waits with it. :meth:`PendingRows.park` moves such a row to the dead letters, from where
it can be retried or dropped; the running bridge sees at its next try that the row is gone and
goes on with the portal's next one. Rows are named ``m<id>`` (Matrix → network, table
``inbox``) and ``n<id>`` (network → Matrix, table ``remote_inbox``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.portal.dead_letters import one_line, when
from bridge.portal.store import Store

PARKED_BY_OPERATOR = "set aside by an operator while it was waiting"


@dataclass(slots=True)
class PendingRow:
    ref: str
    """``m<id>`` or ``n<id>``."""
    to_network: bool
    network: str | None
    where: str
    kind: str
    received_at: int
    attempts: int
    last_error: str | None

    def line(self, now_ms: int) -> str:
        direction = "Matrix → network" if self.to_network else "network → Matrix"
        waited = _duration((now_ms - self.received_at) / 1000)
        tries = f"{self.attempts} failed attempt{'s' if self.attempts != 1 else ''}"
        error = f"  {one_line(self.last_error)}" if self.last_error else ""
        return (
            f"{self.ref}  {direction}  {self.network or '-'}  {self.where}  {self.kind}  "
            f"since {when(self.received_at)} ({waited})  {tries}{error}"
        )


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def parse_ref(text: str) -> tuple[bool, int]:
    """``m12`` → (True, 12); ``n40`` → (False, 40); ValueError otherwise."""
    if len(text) > 1 and text[0] in "mn" and text[1:].isdigit():
        return text[0] == "m", int(text[1:])
    raise ValueError(f"{text!r} is not a pending row: give m<id> or n<id> as listed")


class PendingRows:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._db = store.database

    async def oldest(self, limit: int = 100) -> list[PendingRow]:
        """The oldest rows of both inboxes, oldest first."""
        matrix = await self._db.fetch(
            "SELECT i.id, i.kind, i.room_id, i.received_at, i.attempts, i.last_error,"
            " p.network FROM inbox i LEFT JOIN portal p ON p.mxid = i.room_id"
            " ORDER BY i.id LIMIT $1",
            limit,
        )
        remote = await self._db.fetch(
            "SELECT id, network, portal_id, kind, received_at, attempts, last_error"
            " FROM remote_inbox ORDER BY id LIMIT $1",
            limit,
        )
        rows = [
            PendingRow(f"m{r['id']}", True, r["network"], r["room_id"] or "-", r["kind"],
                       int(r["received_at"]), int(r["attempts"]), r["last_error"])
            for r in matrix
        ] + [
            PendingRow(f"n{r['id']}", False, r["network"], f"portal {r['portal_id']}", r["kind"],
                       int(r["received_at"]), int(r["attempts"]), r["last_error"])
            for r in remote
        ]  # fmt: skip
        rows.sort(key=lambda row: row.received_at)
        return rows[:limit]

    async def count(self) -> int:
        return int(
            await self._db.fetchval(
                "SELECT (SELECT COUNT(*) FROM inbox) + (SELECT COUNT(*) FROM remote_inbox)"
            )
        )

    async def park(self, ref: str) -> int | None:
        """Move the row to the dead letters; its dead letter's id, None if it is not pending
        (it was delivered meanwhile, or the ref names nothing)."""
        to_network, row_id = parse_ref(ref)
        if to_network:
            try:
                return (await self._store.park_inbox(row_id, PARKED_BY_OPERATOR)).id
            except KeyError:
                return None
        found = await self._store.remote_inbox.get(row_id)
        if found is None:
            return None
        return await self._store.remote_inbox.park(found, PARKED_BY_OPERATOR)
