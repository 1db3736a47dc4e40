"""Dead letters for operators: what could not be bridged, to list, show, retry or drop.

A dead letter is a Matrix event that could not reach its network (``network`` is NULL: a parked
``inbox`` row, or an event of a transaction the bridge could not read) or a network's input that
Matrix refused (a parked ``remote_inbox`` row, naming its network and portal).

A retry moves the letter back into its inbox table with a new id (ids only grow), so it is
handled behind whatever its portal has queued. The running bridge finds such rows by itself (see
``Router._dispatch_inbox`` and ``RemoteInbox.poll``), so the command line can retry while the
bridge runs. On PostgreSQL the move takes a lock that makes inbox ids commit in id order: a row
the bridge had not been told about can then never hide below one it has seen.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from mautrix.util.async_db import Connection, Database, Scheme

UNREADABLE = "unreadable event"
"""How the error of an event the bridge could not read begins; such a letter cannot be
retried (it would not be readable the next time either), only dropped."""

_LETTER_COLUMNS = (
    "d.id, d.kind, d.event_id, d.room_id, d.error, d.attempts, d.parked_at, d.network,"
    " d.portal_id, d.receiver, d.login_id, d.dedupe_id,"
    " p.network AS p_network, p.remote_id AS p_remote_id, p.mxid AS p_mxid"
)
# The portal of a letter: the room's for a Matrix event, its own for a network's input.
_LETTER_FROM = (
    " FROM dead_letter d LEFT JOIN portal p ON"
    " (d.network IS NULL AND p.mxid = d.room_id)"
    " OR (p.network = d.network AND p.remote_id = d.portal_id"
    " AND p.receiver = COALESCE(d.receiver, ''))"
)
_MOVE_COLUMNS = (
    "id, kind, event_id, room_id, payload, error, network, portal_id, receiver, login_id, dedupe_id"
)
_SECRET_KEY = re.compile(
    r"password|passwd|passphrase|secret|token|authori[sz]ation|cookie|api[-_]?key"
    r"|private[-_]?key|credential",
    re.IGNORECASE,
)
HIDDEN = "[hidden]"


@dataclass(slots=True)
class UnreadableEvent:
    """Something a transaction carried that the bridge cannot read, kept as it came."""

    kind: str
    raw: Any
    reason: str
    event_id: str | None = None
    room_id: str | None = None


@dataclass(slots=True)
class Letter:
    id: int
    kind: str
    network: str | None
    """The row's own network, or (a Matrix event) the network of its room's portal."""
    to_network: bool
    """Matrix → network (an inbox row); False for network → Matrix (a remote inbox row)."""
    event_id: str | None
    room_id: str | None
    portal_id: str | None
    receiver: str | None
    login_id: str | None
    dedupe_id: str | None
    error: str
    attempts: int
    parked_at: int
    payload: str | None = None
    """The stored JSON; only read by :meth:`DeadLetterStore.get`."""

    @property
    def direction(self) -> str:
        return "Matrix → network" if self.to_network else "network → Matrix"

    @property
    def retryable(self) -> bool:
        return not (self.to_network and self.error.startswith(UNREADABLE))


Outcome = Literal["retried", "pending", "unreadable", "missing"]


@dataclass(slots=True)
class Retried:
    letter_id: int
    outcome: Outcome
    """``retried``: back in its inbox as ``row_id``; ``pending``: the same event or input was
    already waiting there, so the letter is just removed; ``unreadable``: kept, it cannot be
    retried; ``missing``: no such dead letter."""
    to_network: bool | None = None
    row_id: int | None = None


class _Keep(Exception):
    def __init__(self, result: Retried) -> None:
        self.result = result


def _letter(row: Any, payload: str | None = None) -> Letter:
    own = row["network"]
    return Letter(
        id=int(row["id"]), kind=row["kind"], network=own or row["p_network"],
        to_network=own is None, event_id=row["event_id"], room_id=row["room_id"] or row["p_mxid"],
        portal_id=row["portal_id"] or row["p_remote_id"], receiver=row["receiver"],
        login_id=row["login_id"], dedupe_id=row["dedupe_id"], error=row["error"],
        attempts=int(row["attempts"]), parked_at=int(row["parked_at"]), payload=payload,
    )  # fmt: skip


def dump_unreadable(raw: Any) -> str:
    """``raw`` as JSON the database surely takes (ASCII), or a note if it cannot be written."""
    try:
        return json.dumps(raw, ensure_ascii=True, default=repr)
    except (RecursionError, ValueError, TypeError) as err:
        return json.dumps(f"(not storable as JSON: {type(err).__name__})")


class DeadLetterStore:
    def __init__(self, db: Database, clock: Callable[[], int]) -> None:
        self._db = db
        self._clock = clock

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One transaction that store calls made inside it (in this task) share."""
        conn: Connection
        async with self._db.acquire() as conn, conn.transaction():
            yield conn

    async def park_unreadable(self, txn_id: str, events: Sequence[UnreadableEvent]) -> list[int]:
        """Keep what a transaction carried that the bridge cannot read; returns the ids."""
        ids: list[int] = []
        now = self._clock()
        for event in events:
            error = f"{UNREADABLE}: {event.reason} (transaction {txn_id})"
            row_id = await self._db.fetchval(
                "INSERT INTO dead_letter (kind, event_id, room_id, payload, error, attempts,"
                " parked_at) VALUES ($1, $2, $3, $4, $5, 0, $6) RETURNING id",
                event.kind, event.event_id, event.room_id, dump_unreadable(event.raw),
                error[:2000], now,
            )  # fmt: skip
            ids.append(int(row_id))
        return ids

    async def count(self) -> int:
        return int(await self._db.fetchval("SELECT COUNT(*) FROM dead_letter"))

    async def newest(self, limit: int = 100) -> list[Letter]:
        """The newest ``limit`` dead letters, oldest first, without their payloads."""
        rows = await self._db.fetch(
            f"SELECT {_LETTER_COLUMNS}{_LETTER_FROM} ORDER BY d.id DESC LIMIT $1", limit
        )
        return [_letter(row) for row in reversed(rows)]

    async def get(self, letter_id: int) -> Letter | None:
        row = await self._db.fetchrow(
            f"SELECT {_LETTER_COLUMNS}, d.payload{_LETTER_FROM} WHERE d.id = $1", letter_id
        )
        return _letter(row, row["payload"]) if row is not None else None

    async def drop(self, letter_id: int) -> bool:
        rows = await self._db.fetch("DELETE FROM dead_letter WHERE id=$1 RETURNING id", letter_id)
        return bool(rows)

    async def drop_all(self) -> int:
        return len(await self._db.fetch("DELETE FROM dead_letter RETURNING id"))

    async def retry_all(self) -> list[Retried]:
        """Every dead letter, oldest first, so a portal's letters keep their order."""
        ids = [int(r["id"]) for r in await self._db.fetch("SELECT id FROM dead_letter ORDER BY id")]
        return [await self.retry(letter_id) for letter_id in ids]

    async def retry(self, letter_id: int) -> Retried:
        """Move a dead letter back into its inbox, behind what its portal has queued."""
        conn: Connection
        try:
            async with self._db.acquire() as conn, conn.transaction():
                if self._db.scheme != Scheme.SQLITE:
                    # Inserts into the inboxes wait for this transaction, and this one for those
                    # under way: the new id is above every id committed before it and below
                    # every id committed after it (see the module docstring).
                    await conn.execute("LOCK TABLE inbox, remote_inbox IN SHARE ROW EXCLUSIVE MODE")
                # A write first: on SQLite it takes the write lock at once (a read first could
                # not be upgraded if the bridge wrote meanwhile).
                rows = await conn.fetch(
                    f"DELETE FROM dead_letter WHERE id=$1 RETURNING {_MOVE_COLUMNS}", letter_id
                )
                if not rows:
                    return Retried(letter_id, "missing")
                row = rows[0]
                to_network = row["network"] is None
                if to_network and not _readable(row):
                    raise _Keep(Retried(letter_id, "unreadable", to_network))
                row_id = await (self._to_inbox if to_network else self._to_remote_inbox)(
                    conn, letter_id, row
                )
        except _Keep as keep:  # rolled back: the letter stays
            return keep.result
        return Retried(letter_id, "pending" if row_id is None else "retried", to_network, row_id)

    async def _to_inbox(self, conn: Connection, letter_id: int, row: Any) -> int | None:
        row_id = await conn.fetchval(
            "INSERT INTO inbox (txn_id, kind, event_id, room_id, payload, received_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING RETURNING id",
            f"retry:{letter_id}", row["kind"], row["event_id"], row["room_id"], row["payload"],
            self._clock(),
        )  # fmt: skip
        return None if row_id is None else int(row_id)

    async def _to_remote_inbox(self, conn: Connection, letter_id: int, row: Any) -> int | None:
        row_id = await conn.fetchval(
            "INSERT INTO remote_inbox"
            " (network, portal_id, receiver, login_id, kind, dedupe_id, payload, received_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (network, portal_id, receiver, dedupe_id) DO NOTHING RETURNING id",
            row["network"], row["portal_id"] or "", row["receiver"] or "", row["login_id"] or "",
            row["kind"], row["dedupe_id"], row["payload"], self._clock(),
        )  # fmt: skip
        return None if row_id is None else int(row_id)


def _readable(row: Any) -> bool:
    if str(row["error"]).startswith(UNREADABLE):
        return False
    try:
        return isinstance(json.loads(row["payload"]), dict)
    except ValueError:
        return False


# --- what an operator reads ---------------------------------------------------------------


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def where(letter: Letter) -> str:
    """The room of a Matrix event; the portal (and its room) of a network's input."""
    if letter.to_network:
        return letter.room_id or "-"
    portal = f"portal {letter.portal_id or '-'}"
    return f"{portal} ({letter.room_id})" if letter.room_id else portal


def line(letter: Letter) -> str:
    attempts = f"{letter.attempts} attempt{'s' if letter.attempts != 1 else ''}"
    return (
        f"{letter.id}  {letter.direction}  {letter.network or '-'}  {where(letter)}  "
        f"{when(letter.parked_at)}  {attempts}  {one_line(letter.error)}"
    )


def hide_secrets(value: Any) -> Any:
    """``value`` with the values of secret-looking keys (password, token, …) replaced."""
    if isinstance(value, dict):
        return {
            key: HIDDEN if _SECRET_KEY.search(str(key)) else hide_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [hide_secrets(item) for item in value]
    return value


def details(letter: Letter) -> str:
    """Everything about one letter, the payload last (pretty, secrets hidden)."""
    fields = [
        ("direction", letter.direction), ("network", letter.network or "-"),
        ("room", letter.room_id or "-"), ("portal", letter.portal_id or "-"),
        ("kind", letter.kind), ("event", letter.event_id or "-"),
        ("login", letter.login_id or "-"), ("dedupe id", letter.dedupe_id or "-"),
        ("parked", when(letter.parked_at)), ("attempts", str(letter.attempts)),
        ("error", letter.error),
    ]  # fmt: skip
    if not letter.retryable:
        fields.append(("retry", "no: the bridge cannot read this event; drop it"))
    lines = [f"Dead letter {letter.id}"] + [f"{name + ':':<11}{value}" for name, value in fields]
    payload = letter.payload or ""
    try:
        shown = json.dumps(hide_secrets(json.loads(payload)), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        shown = payload
    lines += ["payload:", shown]
    # Printable whatever it holds (a lone surrogate would stop print()).
    return "\n".join(lines).encode("utf-8", "backslashreplace").decode("utf-8")


def retry_summary(results: list[Retried]) -> str:
    """What a retry did, for the room and the command line."""
    if not results:
        return "No dead letters to retry."
    lines = []
    for r in results:
        if r.outcome == "retried":
            inbox = (
                "inbox (Matrix → network)" if r.to_network else "remote inbox (network → Matrix)"
            )
            lines.append(f"Dead letter {r.letter_id}: back in the {inbox}, behind what its "
                         "portal has queued.")  # fmt: skip
        elif r.outcome == "pending":
            lines.append(f"Dead letter {r.letter_id}: the same event is already pending; "
                         "the letter is removed.")  # fmt: skip
        elif r.outcome == "unreadable":
            lines.append(f"Dead letter {r.letter_id}: an event the bridge cannot read; it "
                         "cannot be retried, only dropped.")  # fmt: skip
        else:
            lines.append(f"There is no dead letter {r.letter_id}.")
    return "\n".join(lines)
