"""The audit log: every admin action and every policy refusal, who, what, when and from where.

Each entry is a row of the ``audit`` table (:mod:`bridge.portal.audit`, read with ``pontis -c
CONFIG audit``) and one INFO line of the logger ``pontis.audit``. Recording never breaks what
is recorded: a database that fails or hangs costs a WARNING line (the INFO line is still
written), never the action. :meth:`AuditLog.note` is for callers that are not async (the
federation policy's refusal callback); it writes in the background, at most
``MAX_BACKGROUND`` at a time, so a flood of refusals cannot pile up tasks.

Actors: a Matrix user id, a remote identity (``xmpp:evil.example``), or ``cli:<unix user>``.
Origins: ``management-room <room id>``, ``room <room id>``, ``cli``, or the federation entry
that refused (``xmpp direct message``, ``matrix invite``…).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.core.federation import Refusal
from bridge.portal.audit import AuditEntry, AuditStore, Outcome, safe_detail, safe_text
from bridge.portal.dead_letters import Retried
from bridge.portal.store import Store

TIMEOUT_SECONDS = 10.0
"""How long a write may take before the action goes on without it."""
MAX_BACKGROUND = 256
"""Writes :meth:`AuditLog.note` keeps under way; beyond that an entry is only logged."""
FEDERATION_REFUSED = "federation.refused"

Detail = str | Mapping[str, Any] | Sequence[Any]


def retried(letter_id: int | None, results: Sequence[Retried]) -> tuple[Outcome, str]:
    """Outcome and detail of a dead-letter retry (``letter_id`` None: all of them)."""
    counts = Counter(r.outcome for r in results)
    failed = letter_id is not None and any(r.outcome in ("missing", "unreadable") for r in results)
    detail = ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "none"
    return ("failed" if failed else "ok"), detail


def command_action(command: str) -> str:
    """The audit action of a management command: ``retry`` → ``dead-letters.retry``."""
    name = command.lower()
    return {"dead-letters": "dead-letters.list", "retry": "dead-letters.retry",
            "drop": "dead-letters.drop"}.get(name, name)  # fmt: skip


def cli_actor() -> str:
    """``cli:<unix user>`` of the process's effective user (not the forgeable ``$USER``)."""
    uid = os.geteuid()
    try:
        return f"cli:{pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"cli:uid {uid}"


class AuditLog:
    def __init__(
        self,
        store: Store | AuditStore,
        *,
        log: logging.Logger | None = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self._rows = store if isinstance(store, AuditStore) else AuditStore(store.database)
        self._log = log or logging.getLogger("pontis.audit")
        self._timeout = timeout
        self._background: set[asyncio.Task[None]] = set()

    async def record(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        outcome: Outcome,
        origin: str,
        detail: Detail = "",
    ) -> AuditEntry | None:
        """Write the entry and log it; None (and a WARNING) if the database did not take it."""
        self._log.info(
            "%s %s %s: %s (from %s)%s", safe_text(actor), safe_text(action),
            safe_text(target) or "-", outcome, safe_text(origin) or "-",
            f": {shown}" if (shown := safe_detail(detail)) else "",
        )  # fmt: skip
        try:
            return await asyncio.wait_for(
                self._rows.add(actor=actor, action=action, target=target, outcome=outcome,
                               origin=origin, detail=detail),
                self._timeout,
            )  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception as err:
            reason = "timed out" if isinstance(err, TimeoutError) else str(err) or repr(err)
            self._log.warning("Audit entry not stored (%s %s): %s", safe_text(actor),
                              safe_text(action), reason)  # fmt: skip
            return None

    def note(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        outcome: Outcome,
        origin: str,
        detail: Detail = "",
    ) -> None:
        """:meth:`record` from code that is not async: written in the background (needs a
        running event loop). :meth:`flush` waits for what is under way."""
        if len(self._background) >= MAX_BACKGROUND:
            self._log.warning("Audit log busy: %s %s %s (%s, from %s) logged only",
                              safe_text(actor), safe_text(action), safe_text(target), outcome,
                              safe_text(origin))  # fmt: skip
            return
        task = asyncio.get_running_loop().create_task(
            self._noted(actor=actor, action=action, target=target, outcome=outcome,
                        origin=origin, detail=detail),
            name="audit",
        )  # fmt: skip
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _noted(self, **entry: Any) -> None:
        await self.record(**entry)

    def note_refusal(self, refused: Refusal, entry: str) -> None:
        """A refusal of the federation policy at ``entry``. The actor is the side that tried:
        the remote one for an entry of its network (``xmpp direct message``), else Matrix."""
        remote = f"{refused.network}:{refused.remote}"
        actor = remote if entry.startswith(f"{refused.network} ") else refused.matrix
        self.note(actor=actor, action=FEDERATION_REFUSED, target=f"{remote} ↔ {refused.matrix}",
                  outcome="refused", origin=entry, detail=str(refused))  # fmt: skip

    async def flush(self) -> None:
        """Wait for the background writes under way (before the store closes)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
