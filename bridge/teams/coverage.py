"""How far back a chat's catch-up must look: what the bridge can prove it has seen.

A chat's messages reach the bridge by two roads: change notifications while the webhook keeps
them, and the catch-up's walk through Graph's message list when the bridge starts (or Graph
says it missed some). A walk that stops at the newest message Matrix has is not enough: a
notification kept right after a restart, or one Graph delivered again late, puts a known
message above older ones nobody has seen, and they were lost. So the bridge keeps two kinds of
proof in its key-value store and walks back only to where they end:

- **Periods.** A period is a stretch of time in which every notification Graph tried to
  deliver was kept. It begins once the webhook is live and every tenant's subscription has
  been renewed or created in this process, and ends with the process, with a webhook call that
  could not be stored (Graph retries it, but may give up), with a subscription that could not
  be renewed or had to be created again, and with Graph's ``missed`` lifecycle event (then
  reaching back :data:`MISSED_LOOKBACK_MS`). Every :data:`WRITE_EVERY` seconds the period is
  written down as covering the messages written from its start until :data:`MARGIN` ago (Graph
  notifies within seconds; the margin also absorbs clock skew); an ending never moves that
  forward. The last :data:`PERIODS_KEPT` are kept.
- **Chat records.** Per chat, the time of its last catch-up's walk (the walk found what was
  written before it), or, for a chat that a notification bridged first, that message's time;
  with the period it was made in.

A chat is covered down to its record's time less :data:`MARGIN`, or, when its record was made
in a period that had begun by then, down to that period's end, whichever is later; a catch-up
walks back to there, bridging every message it finds that Matrix lacks. One converted again
after a crash reuses the bound it found first (its own messages may be on Matrix by now). A
chat without a record (bridged by an older version) is walked to the first message Matrix has.

What this assumes of Graph: it lists a message within moments of its creation, and it sends
its notification within :data:`MARGIN`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

MARGIN_MS = 120_000
"""Graph's notification delay and clock skew allowed for, in milliseconds."""
MARGIN = MARGIN_MS / 1000
MISSED_LOOKBACK_MS = 4 * 3600 * 1000 + MARGIN_MS
"""Graph retries a notification for up to four hours before it gives up and says ``missed``."""
WRITE_EVERY = 60.0
PERIODS_KEPT = 64
PERIODS_KEY = "catch-up-periods"
CHAT_PREFIX = "catch-up:"


class KeyValues(Protocol):
    async def kv_get(self, key: str) -> str | None: ...
    async def kv_set(self, key: str, value: str) -> None: ...


@dataclass(slots=True)
class Period:
    id: str
    since: int
    """When the webhook began to keep everything (ms since the epoch)."""
    until: int
    """Messages written up to here had their notifications kept."""


@dataclass(slots=True)
class ChatRecord:
    at: int
    """The catch-up's walk, or the first bridged message (ms since the epoch)."""
    bound: int
    """Messages written up to here are on Matrix, or were counted as skipped."""
    period: str
    token: str = ""
    """The catch-up input that made the record, and the bound that it walked to (``used``,
    None: to the first known message)."""
    used: int | None = None


class Coverage:
    def __init__(
        self, kv: KeyValues, log: logging.Logger, clock: Callable[[], float] = time.time
    ) -> None:
        self._kv = kv
        self._log = log
        self._clock = clock
        self._period: Period | None = None
        self._written: list[Period] | None = None
        self._lock = asyncio.Lock()

    def _now(self) -> int:
        return int(self._clock() * 1000)

    @property
    def period(self) -> str:
        return self._period.id if self._period else ""

    def live(self) -> None:
        """The webhook keeps what Graph sends, and every tenant's subscription is in place:
        a period begins (unless one runs)."""
        if self._period is None:
            now = self._now()
            self._period = Period(secrets.token_hex(8), since=now, until=now - MARGIN_MS)

    async def end(self, why: str, lookback_ms: int = 0) -> None:
        """Notifications may have been lost: the period ends where it was last written down (not
        later: the loss may have begun before it was noticed), or ``lookback_ms`` before now if
        that is earlier (Graph's ``missed`` concerns notifications it retried for hours)."""
        ending, self._period = self._period, None
        if ending is None:
            return
        self._log.info("Teams: notifications may have been missed (%s); catch-up bound kept", why)
        written = {p.id: p for p in await self._periods()}
        if ending.id not in written:
            return  # it never claimed anything
        ending.until = min(written[ending.id].until, self._now() - lookback_ms)
        await self._write(ending, extend=False)

    async def write(self) -> None:
        """Record that the current period covers everything until :data:`MARGIN` ago."""
        if self._period is not None:
            self._period.until = max(self._period.until, self._now() - MARGIN_MS)
            await self._write(self._period)

    async def keep_written(self) -> None:
        """Background loop: :meth:`write` every :data:`WRITE_EVERY` seconds."""
        while True:
            await asyncio.sleep(WRITE_EVERY)
            try:
                await self.write()
            except Exception as err:  # the database is away: the bound stays older
                self._log.warning("Teams: cannot record the catch-up bound: %s", err)

    async def _write(self, period: Period, *, extend: bool = True) -> None:
        async with self._lock:
            if extend and (self._period is None or self._period.id != period.id):
                return  # ended meanwhile: what it claims is fixed
            periods = [p for p in await self._periods() if p.id != period.id]
            periods = [*periods, Period(period.id, period.since, period.until)][-PERIODS_KEPT:]
            await self._kv.kv_set(PERIODS_KEY, json.dumps([asdict(p) for p in periods]))
            self._written = periods

    async def _periods(self) -> list[Period]:
        if self._written is None:
            try:
                loaded = [Period(**p) for p in _load(await self._kv.kv_get(PERIODS_KEY), [])]
            except TypeError:
                loaded = []
            self._written = loaded
        return self._written

    # --- per chat ----------------------------------------------------------------------------

    async def bound(self, chat_id: str, token: str) -> int | None:
        """How far back catch-up input ``token`` walks the chat (ms; None: to the first
        message Matrix has)."""
        record = await self._record(chat_id)
        if record is None:
            return None
        if token and record.token == token:
            return record.used
        bound = record.bound
        for period in await self._periods():
            if period.id == record.period and period.since <= record.at:
                bound = max(bound, period.until)
        return bound

    async def walked(self, chat_id: str, token: str, used: int | None, at: int) -> None:
        """A catch-up has walked the chat at ``at`` (ms), down to ``used``."""
        record = ChatRecord(at=at, bound=at - MARGIN_MS, period=self.period, token=token, used=used)
        await self._kv.kv_set(CHAT_PREFIX + chat_id, json.dumps(asdict(record)))

    async def first_bridged(self, chat_id: str, created: int | None) -> None:
        """A notification bridges the chat's first message, written at ``created``: older
        messages are the chat's history, not missed."""
        if created is None or await self._record(chat_id) is not None:
            return
        record = ChatRecord(at=created, bound=created - 1, period=self.period)
        await self._kv.kv_set(CHAT_PREFIX + chat_id, json.dumps(asdict(record)))

    def now(self) -> int:
        return self._now()

    async def _record(self, chat_id: str) -> ChatRecord | None:
        raw = _load(await self._kv.kv_get(CHAT_PREFIX + chat_id), None)
        try:
            return ChatRecord(**raw) if isinstance(raw, dict) else None
        except TypeError:  # not written by this version: walk as without one
            return None


def _load(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default
