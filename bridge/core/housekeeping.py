"""Housekeeping: prunes the store on a schedule, with the retention of ``bridge.retention``.

What is pruned and why it is safe (see also docs/operations.md):

- ``as_transaction``: ids of accepted appservice transactions, kept ``transaction_hours``
  (default 24). The homeserver resends a transaction only until the bridge answered 200, so
  an id older than that deduplicates nothing.
- connector markers in ``kv`` not written for ``marker_days`` (default 90): only keys a
  connector declares as markers (``kv_markers``, a tuple of key prefixes on its
  :class:`~bridge.core.connector.NetworkConnector` class, e.g. XMPP stanza ids and Teams edit
  times); every other key (subscriptions, the crypto recovery key) is kept.
- ``dead_letter`` rows parked more than ``dead_letter_days`` ago (default 30), both directions.
- ``audit`` entries recorded more than ``audit_days`` ago (default 365).

Processed inbox rows (either direction) are deleted as soon as they are delivered; pending ones
and message mappings (needed for replies and edits) are never pruned. A value of 0 keeps those
rows for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.core.config import ConfigError, ConfigProblem
from bridge.portal.pruning import Pruned, Pruner

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
FIRST_RUN_SECONDS = 60.0
"""The first run waits a little, so that start-up (recovery, connectors) goes first."""


@dataclass(frozen=True, slots=True)
class Retention:
    """``bridge.retention``; 0 keeps the rows for ever."""

    transaction_hours: float = 24
    marker_days: float = 90
    dead_letter_days: float = 30
    interval_minutes: float = 60
    audit_days: float = 365

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> Retention:
        values: dict[str, float] = {}
        problems: list[ConfigProblem] = []
        defaults = cls()
        for name in (
            "transaction_hours", "marker_days", "dead_letter_days", "interval_minutes",
            "audit_days",
        ):  # fmt: skip
            value = section.get(name, getattr(defaults, name))
            smallest = 0.1 if name == "interval_minutes" else 0
            if isinstance(value, bool) or not isinstance(value, int | float) or value < smallest:
                what = "a number above 0" if smallest else "a number of at least 0"
                problems.append(ConfigProblem(f"bridge.retention.{name}", f"must be {what}"))
            else:
                values[name] = float(value)
        if problems:
            raise ConfigError(problems)
        return cls(**values)


class Housekeeping:
    """Runs :meth:`run_once` ``FIRST_RUN_SECONDS`` after :meth:`start`, then every
    ``interval_minutes``; a failed run (the database away) is logged and the schedule goes on.
    ``markers`` maps a network to the key prefixes of its markers."""

    def __init__(
        self,
        pruner: Pruner,
        retention: Retention,
        markers: Mapping[str, Sequence[str]],
        *,
        log: logging.Logger,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        first_run: float = FIRST_RUN_SECONDS,
    ) -> None:
        self._pruner = pruner
        self.retention = retention
        self._markers = {network: tuple(p) for network, p in markers.items() if p}
        self._log = log
        self._sleep = sleep
        self._first_run = first_run
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> Pruned:
        r, pruned = self.retention, Pruned()
        if r.transaction_hours:
            pruned.transactions = await self._pruner.transactions(
                int(r.transaction_hours * HOUR_MS)
            )
        if r.marker_days:
            for network, prefixes in self._markers.items():
                pruned.markers += await self._pruner.kv_markers(
                    network, prefixes, int(r.marker_days * DAY_MS)
                )
        if r.dead_letter_days:
            pruned.dead_letters = await self._pruner.dead_letters(int(r.dead_letter_days * DAY_MS))
        if r.audit_days:
            pruned.audit = await self._pruner.audit(int(r.audit_days * DAY_MS))
        return pruned

    async def run_forever(self) -> None:
        await self._sleep(self._first_run)
        while True:
            try:
                pruned = await self.run_once()
            except Exception as err:
                self._log.warning("Housekeeping failed, trying again next time: %s", err)
            else:
                if pruned.total:
                    self._log.info(
                        "Housekeeping deleted %d transaction ids, %d markers, %d dead letters, "
                        "%d audit entries",
                        pruned.transactions, pruned.markers, pruned.dead_letters, pruned.audit,
                    )  # fmt: skip
            await self._sleep(self.retention.interval_minutes * 60)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run_forever(), name="housekeeping")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
