"""How long the core keeps trying: for ever while the other side is away, never for a refusal.

A homeserver, database or network that is down comes back; the portal waits for it with capped
backoff, in order, however long that takes, and nothing is given up meanwhile. A permanent
refusal (``PermanentError``, ``NotSupported``) ends at once. Anything else unexpected (a bug, a
malformed payload) is tried ``attempts`` times, so one bad event cannot hold its portal for
ever.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from bridge.core.errors import NotSupported, PermanentError, TransientError


class Withdrawn(Exception):
    """What was being tried is no longer wanted: an operator set its row aside meanwhile."""


MIN_WAIT = 0.1
"""Shortest wait between two tries while the other side is away, in seconds."""


@dataclass(slots=True)
class RetryPolicy:
    attempts: int
    """Tries of an unexpected failure before it is given up (transient ones never are)."""
    backoff: float
    """Delay before the first retry, in seconds; doubled after each attempt."""
    max_backoff: float = 60.0
    """Longest wait between two tries."""

    def delay(self, attempt: int, err: Exception) -> float:
        if isinstance(err, TransientError) and err.retry_after is not None:
            return min(err.retry_after, max(self.max_backoff, self.backoff))
        return min(self.backoff * 2 ** min(attempt - 1, 30), self.max_backoff)


def is_transient(err: BaseException) -> bool:
    """The other side is away (homeserver, database, network) and will be back."""
    return isinstance(
        err,
        TransientError
        | OSError
        | TimeoutError
        | aiohttp.ClientError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.TooManyConnectionsError
        | sqlite3.OperationalError,
    )


def is_permanent(err: BaseException) -> bool:
    return isinstance(err, PermanentError | NotSupported)


async def until_done(
    what: str,
    action: Callable[[], Awaitable[Any]],
    policy: RetryPolicy,
    log: logging.Logger,
    *,
    on_failure: Callable[[Exception], Awaitable[Any]] | None = None,
    first_attempt: int = 1,
    count_error: Callable[[Exception], None] | None = None,
    bounded: bool = False,
    still_wanted: Callable[[], Awaitable[bool]] | None = None,
) -> Any:
    """Run ``action`` until it succeeds; raises a permanent error at once and an unexpected
    one after ``policy.attempts`` tries. ``on_failure`` records each failure that counts (its
    own errors, a database that is down, are logged and do not stop the retrying). ``bounded``: transient
    failures count against ``attempts`` too, for callers that keep the event themselves and
    offer it again later (an SMTP 451). ``still_wanted`` is asked before each retry (never before
    the first try); if it says no, :class:`Withdrawn` is raised."""
    unexpected = first_attempt - 1  # failures that count against the budget, this one's too
    tries = 1  # for the backoff only
    while True:
        try:
            return await action()
        except (NotSupported, PermanentError, asyncio.CancelledError):
            raise
        except Exception as err:
            if count_error is not None:
                count_error(err)
            transient = is_transient(err) and not bounded
            # An outage is not the event's fault: it neither uses up the budget nor is recorded
            # as an attempt (after a long outage, the first unexpected error is not the last).
            if not transient:
                unexpected += 1
                if on_failure is not None:
                    try:
                        await on_failure(err)
                    except Exception as record_err:
                        log.warning("Could not record the failure of %s: %s", what, record_err)
                if unexpected >= policy.attempts:
                    raise
            # Never a busy loop, however small the configured backoff.
            delay = max(policy.delay(tries, err), MIN_WAIT if transient else 0.0)
            if transient:
                log.warning("%s: %s; waiting for it to come back, next try in %.1f s (try %d)",
                            what, err, delay, tries)  # fmt: skip
            else:
                log.warning("%s failed (attempt %d of %d): %s; retrying in %.1f s",
                            what, unexpected, policy.attempts, err, delay)  # fmt: skip
            tries += 1
            await asyncio.sleep(delay)
            if still_wanted is not None and not await _asked(still_wanted, what, log):
                raise Withdrawn(what) from err


async def _asked(
    still_wanted: Callable[[], Awaitable[bool]], what: str, log: logging.Logger
) -> bool:
    try:
        return await still_wanted()
    except Exception as err:  # the database is away too: keep trying
        log.debug("Could not check whether %s is still wanted: %s", what, err)
        return True
