"""Login processes under way through the provisioning API.

Kept in memory by each API instance (a restart forgets them, as it forgets a half-done login in
the management room), a few per user: a user's fourth start cancels their oldest. Each lives
:data:`LIFETIME_SECONDS` from its start; an expired one is cancelled the next time the API looks.
A process id is random and unguessable, and a process belongs to the user who started it:
to anyone else it does not exist.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.core.connector import LoginProcess
from bridge.core.ids import NetworkID
from bridge.provision.errors import ApiError

MAX_PER_USER = 3
MAX_PROCESSES = 1000
"""Processes under way for everyone together; more starts are refused until some end."""
LIFETIME_SECONDS = 15 * 60
PROCESS_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")
"""As ``openapi.yaml`` has it: 24 random bytes, URL-safe base64."""


@dataclass(eq=False, slots=True)
class Pending:
    """One process: whose, of which network, since when. ``lock`` lets one answer at a time
    reach the connector."""

    id: str
    user: str
    network: NetworkID
    process: LoginProcess
    started: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LoginProcesses:
    def __init__(
        self,
        *,
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        per_user: int = MAX_PER_USER,
        limit: int = MAX_PROCESSES,
        lifetime: float = LIFETIME_SECONDS,
    ) -> None:
        self._log = log
        self._clock = clock
        self._per_user = per_user
        self._limit = limit
        self._lifetime = lifetime
        self._pending: dict[str, Pending] = {}
        """By id, oldest first."""

    async def check_room(self, user: str) -> None:
        """Raise 429 when no process can be started for ``user`` now: every slot is taken and
        none of them is the user's own (a user's own oldest gives way to the new one)."""
        await self._expire()
        if len(self._pending) >= self._limit and not any(
            p.user == user for p in self._pending.values()
        ):
            raise ApiError(
                429, "M_LIMIT_EXCEEDED",
                "Too many logins are under way on this bridge; try again in a few minutes.",
            )  # fmt: skip

    async def add(self, user: str, network: NetworkID, process: LoginProcess) -> Pending:
        """Keep a started process; the user's oldest is cancelled if they have too many."""
        mine = [p for p in self._pending.values() if p.user == user]
        for oldest in mine[: max(0, len(mine) - self._per_user + 1)]:
            self._pending.pop(oldest.id, None)
            await self.cancel(oldest, "the user started a newer one")
        pending = Pending(secrets.token_urlsafe(24), user, network, process, self._clock())
        self._pending[pending.id] = pending
        return pending

    async def get(self, user: str, process_id: str) -> Pending | None:
        """The user's process, or None if it is unknown, another user's, over or expired."""
        await self._expire()
        pending = self._pending.get(process_id)
        if pending is None or pending.user != user or self._expired(pending):
            return None
        return pending

    def is_current(self, pending: Pending) -> bool:
        return self._pending.get(pending.id) is pending and not self._expired(pending)

    def discard(self, pending: Pending) -> bool:
        """Forget a process that ended; False if it was not (or no longer) kept."""
        if self._pending.get(pending.id) is not pending:
            return False
        del self._pending[pending.id]
        return True

    async def close(self) -> None:
        """Cancel every process (the API is stopping)."""
        pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            await self.cancel(p, "the bridge is stopping")

    def _expired(self, pending: Pending) -> bool:
        return self._clock() - pending.started >= self._lifetime

    async def _expire(self) -> None:
        # One being answered right now is left to its answer; the next look reaps it.
        for p in [p for p in self._pending.values() if self._expired(p) and not p.lock.locked()]:
            del self._pending[p.id]
            await self.cancel(p, f"not finished within {self._lifetime / 60:.0f} minutes")

    async def cancel(self, pending: Pending, why: str) -> None:
        """Tell the connector that a discarded process is over."""
        self._log.info(
            "Login process of %s on %s cancelled: %s", pending.user, pending.network, why
        )
        cancel = getattr(pending.process, "cancel", None)
        if cancel is None:
            return
        try:
            await cancel()
        except Exception as err:  # a connector's failure to clean up fails no request
            self._log.warning(
                "Cancelling a %s login of %s failed: %s", pending.network, pending.user, err
            )
