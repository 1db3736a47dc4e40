"""Network → Matrix: a Matrix user the network removed is removed from the portal room.

A connector says so with ``RemoteKick(matrix_user=…)`` (Teams: the user's own account left the
chat). The bot kicks them if the room's power levels let it. In a room a user bridged with
``bridge`` the bot often has no power to kick; then the Matrix user keeps reading a chat the
network no longer lets them read. That is not an error to retry (more power does not come by
waiting) nor a reason to stop the portal: the room is told once per person and cause, with the
power level the bot needs, the operator gets an ERROR line and an audit entry, and the portal's
queue goes on. The messages that follow are not held back (a room a user bridged is theirs to
answer for); a connector whose chat must be read by its members only refuses them itself
(:mod:`bridge.teams.channel_members`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from bridge.core.audit import AuditLog
from bridge.core.errors import BridgeError, TransientError
from bridge.core.matrix import MatrixAPI, deterministic_txn_id
from bridge.portal.models import Portal
from bridge.portal.store import Store

NOTICED = "core.removals_noticed"
"""Portal metadata: Matrix user → the causes the room was already told it cannot remove them
for. Cleared for a user once they are gone from the room."""
MAX_CAUSES = 8
"""Causes kept per user; a connector with more distinct reasons is told about again."""
MAX_REASON = 200
"""Characters of the connector's reason the room's notice quotes."""
CREATOR = -1
"""What :func:`kick_power_needed` answers for a room creator nobody may remove."""
AUDIT_ACTION = "portal.remove-matrix-user"


def kick_power_needed(
    levels: Mapping[str, Any], creators: Collection[str], bot: str, mxid: str
) -> int | None:
    """None if ``bot`` may kick ``mxid`` under ``levels`` (``m.room.power_levels`` content,
    ``{}`` when the room has none); else the power level it would need, or :data:`CREATOR` if
    ``mxid`` created a room whose creators nobody can remove (room version 12 and later)."""
    if mxid in creators:
        return CREATOR
    if not levels:  # no power levels: only the creator may do anything
        return None if bot in creators else 100
    try:
        users = levels.get("users") or {}
        default = int(levels.get("users_default", 0))
        theirs = int(users.get(mxid, default))
        need = max(int(levels.get("kick", 50)), theirs + 1)
        mine = int(users.get(bot, default))
    except (TypeError, ValueError, AttributeError):
        return 100  # malformed levels: the homeserver decides, the room hears 100
    if bot in creators:
        return None
    return None if mine >= need else need


class MatrixRemovals:
    def __init__(
        self,
        *,
        store: Store,
        matrix: MatrixAPI,
        network_name: Callable[[str], str],
        save: Callable[[Portal], Awaitable[None]],
        log: logging.Logger,
        audit: AuditLog | None = None,
    ) -> None:
        self._store = store
        self._matrix = matrix
        self._network_name = network_name
        self._save = save
        self._log = log
        self._audit = audit

    async def remove(self, portal: Portal, mxid: str, reason: str, remote: str = "") -> None:
        """Kick ``mxid`` from the portal's room for ``reason``, or say once why it cannot be
        done. Raises only what may heal (:class:`TransientError`): the portal's turn is
        retried; a refusal is told, never raised."""
        room = portal.mxid
        assert room is not None
        reason = reason[:MAX_REASON]  # the network's text: kept, logged and quoted this long
        joined = await self._matrix.joined_members(room)
        marked: dict[str, list[str]] = portal.metadata.get(NOTICED) or {}
        # Marks only for those still here: gone, a new removal is told again, and accounts
        # that came and went (a hostile server mints them freely) leave nothing behind.
        noticed = {who: causes for who, causes in marked.items() if who in joined}
        if mxid not in joined:
            if len(noticed) != len(marked):
                portal.metadata[NOTICED] = noticed
                await self._save(portal)
            return
        try:
            levels, creators = await self._matrix.power_levels(room)
            need = kick_power_needed(levels, creators, self._matrix.bot_mxid, mxid)
            if need is None:
                await self._matrix.kick(room, mxid, reason)
                self._log.info("Removed %s from %s: %s", mxid, room, reason)
                return
            why = (
                "they created the room, and nobody may kick a creator"
                if need == CREATOR
                else f"the bot may not kick them (needs power level {need})"
            )
        except TransientError:
            raise
        except BridgeError as err:  # the homeserver knows the rules better: its 403
            need, why = None, str(err)
        await self._refused(portal, mxid, reason, remote, need, why, noticed)

    async def _refused(
        self,
        portal: Portal,
        mxid: str,
        reason: str,
        remote: str,
        need: int | None,
        why: str,
        noticed: dict[str, list[str]],
    ) -> None:
        room = portal.mxid
        assert room is not None
        causes = noticed.get(mxid, [])
        if reason in causes:
            self._log.warning("%s still in %s after %s removed them: %s (room told before)",
                              mxid, room, portal.network, why)  # fmt: skip
            return
        self._log.error("%s stays in %s although %s removed them (%s): %s; telling the room",
                        mxid, room, portal.network, reason or "no reason", why)  # fmt: skip
        await self._notice(portal, mxid, reason, need)
        audit = self._audit or AuditLog(self._store)
        await audit.record(
            actor=f"{portal.network}:{remote}" if remote else str(portal.network),
            action=AUDIT_ACTION, target=mxid, outcome="failed", origin=f"room {room}",
            detail={"portal": str(portal.key), "reason": reason, "error": why},
        )  # fmt: skip
        noticed[mxid] = [*causes, reason][-MAX_CAUSES:]
        portal.metadata[NOTICED] = noticed
        await self._save(portal)

    async def _notice(self, portal: Portal, mxid: str, reason: str, need: int | None) -> None:
        room = portal.mxid
        assert room is not None
        network = self._network_name(portal.network)
        name = await self._matrix.get_displayname(room, mxid)
        who = mxid if name == mxid else f"{name} ({mxid})"
        bot = self._matrix.bot_mxid
        if need == CREATOR:
            todo = (
                "They created it, and nobody can remove a room's creator: if they must not read"
                " this chat, stop bridging this room (the bridge's `unbridge` command)."
            )
        else:
            level = f" (power level {need})" if need is not None else ""
            todo = (
                f"Remove them yourself, and give the bridge bot ({bot}) the power to kick{level}"
                f" in this room so that it removes whom {network} removes from now on."
            )
        why = f" (“{reason[:MAX_REASON]}”)" if reason else ""
        text = (
            f"{network} does not let {who} read this chat{why}, but the bridge cannot remove"
            f" them from this room, so they still read what is bridged here. {todo}"
        )
        try:
            await self._matrix.send(
                bot, room, {"msgtype": "m.notice", "body": text},
                txn_id=deterministic_txn_id("removal-refused", room, mxid, reason),
            )  # fmt: skip
        except TransientError:
            raise  # told on the retry
        except BridgeError as err:
            self._log.error("Could not tell %s that %s stays: %s", room, mxid, err)
