"""The audit log's table: one row per admin action or policy refusal, never a secret.

Every text is made safe before it is written, whoever called: one line, capped, storable on
both engines (no NUL, no lone surrogate), and the values of secret-looking keys hidden, in
JSON (:func:`~bridge.portal.dead_letters.hide_secrets`) as in ``key=value`` text. Rows are
read newest first; :class:`~bridge.portal.pruning.Pruner` deletes old ones.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mautrix.util.async_db import Database

from .dead_letters import _SECRET_KEY, HIDDEN, hide_secrets, one_line, when

Outcome = Literal["ok", "refused", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "refused", "failed")
FIELD_LIMIT = 255
"""Characters kept of actor, action, target and origin."""
DETAIL_LIMIT = 500

_COLUMNS = "id, at, actor, action, target, outcome, origin, detail"
# ``password=x``, ``token: "x y"``, ``client_secret='x'``: the value after a secret-looking key.
_SECRET_ASSIGNMENT = re.compile(
    rf"((?:[\w.-]{{0,40}}?)(?:{_SECRET_KEY.pattern})[\w.-]{{0,40}}[\"']?\s{{0,8}}[=:]\s{{0,8}})"
    r"((?:(?:bearer|basic|digest|token)\s+)?(?:\"[^\"]*\"|'[^']*'|[^\s,;&}\]]+))",
    re.IGNORECASE,
)
# Credentials that name themselves: an HTTP bearer token, Matrix access and login tokens.
_SELF_EVIDENT = re.compile(r"(?i)\b(bearer\s+)\S+|\b(sy[tu]_|mct_)[\w.-]+")


def _now_ms() -> int:
    return int(time.time() * 1000)


def safe_text(value: object, limit: int = FIELD_LIMIT) -> str:
    """``value`` as one storable line of at most ``limit`` characters."""
    text = str(value)[: limit * 4].replace("\x00", "\\x00")
    return one_line(text.encode("utf-8", "backslashreplace").decode("utf-8"), limit)


def hide_in_text(text: str) -> str:
    """``text`` with secret values hidden: a JSON document through ``hide_secrets``, otherwise
    the value of every ``<secret-looking key>=`` or ``:`` and self-evident tokens."""
    # Bounded work whatever a stranger sends: only what can be kept is looked at.
    text = text[: DETAIL_LIMIT * 4]
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.dumps(hide_secrets(json.loads(stripped)), ensure_ascii=False)
        except (ValueError, RecursionError):
            pass
    text = _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + HIDDEN, text)
    return _SELF_EVIDENT.sub(lambda m: (m.group(1) or m.group(2) or "") + HIDDEN, text)


def safe_detail(detail: str | Mapping[str, Any] | Sequence[Any]) -> str:
    """What is stored of ``detail``: a mapping or list as JSON with secrets hidden, a text with
    secret values hidden; one line, capped."""
    if isinstance(detail, str):
        text = hide_in_text(detail)
    else:
        try:
            text = json.dumps(hide_secrets(detail), ensure_ascii=False, default=repr)
        except (ValueError, RecursionError, TypeError) as err:
            text = f"(detail not readable: {type(err).__name__})"
    # Hidden before capping, so a cut cannot leave half a secret that no longer matches.
    return safe_text(text, DETAIL_LIMIT)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: int
    """Milliseconds since the epoch."""
    actor: str
    action: str
    target: str
    outcome: str
    origin: str
    detail: str

    def line(self) -> str:
        """One line for operators: when, who, what, on what, how it ended, from where, detail."""
        fields = [when(self.at), self.actor, self.action, self.target or "-", self.outcome,
                  self.origin or "-"]  # fmt: skip
        if self.detail:
            fields.append(self.detail)
        return "  ".join(fields)


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        id=int(row["id"]), at=int(row["at"]), actor=row["actor"], action=row["action"],
        target=row["target"], outcome=row["outcome"], origin=row["origin"], detail=row["detail"],
    )  # fmt: skip


class AuditStore:
    def __init__(self, db: Database, clock: Callable[[], int] = _now_ms) -> None:
        self._db = db
        self._clock = clock

    async def add(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        outcome: Outcome,
        origin: str,
        detail: str | Mapping[str, Any] | Sequence[Any] = "",
    ) -> AuditEntry:
        """Write one entry (every text made safe, see the module docstring); returns it."""
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
        values = (
            self._clock(), safe_text(actor) or "-", safe_text(action), safe_text(hide_in_text(target)),
            outcome, safe_text(origin), safe_detail(detail),
        )  # fmt: skip
        row_id = await self._db.fetchval(
            "INSERT INTO audit (at, actor, action, target, outcome, origin, detail)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            *values,
        )
        return AuditEntry(int(row_id), *values)

    async def newest(
        self,
        limit: int = 100,
        *,
        actor: str | None = None,
        action: str | None = None,
        since_ms: int | None = None,
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first, of ``actor``, of ``action`` (an exact
        action, or every action under it: ``dead-letters`` takes ``dead-letters.retry``) and
        at or after ``since_ms``."""
        where, args = self._filters(actor, action, since_ms)
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM audit{where} ORDER BY at DESC, id DESC"
            f" LIMIT ${len(args) + 1}",
            *args, limit,
        )  # fmt: skip
        return [_entry(row) for row in rows]

    async def count(
        self, *, actor: str | None = None, action: str | None = None, since_ms: int | None = None
    ) -> int:
        where, args = self._filters(actor, action, since_ms)
        return int(await self._db.fetchval(f"SELECT COUNT(*) FROM audit{where}", *args))

    @staticmethod
    def _filters(
        actor: str | None, action: str | None, since_ms: int | None
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if actor is not None:
            args.append(actor)
            clauses.append(f"actor = ${len(args)}")
        if action is not None:
            args += [action, action + "."]
            n = len(args)
            clauses.append(f"(action = ${n - 1} OR substr(action, 1, {len(action) + 1}) = ${n})")
        if since_ms is not None:
            args.append(since_ms)
            clauses.append(f"at >= ${len(args)}")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
