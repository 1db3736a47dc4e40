"""Remote people's presence on their ghosts, where the homeserver keeps presence.

A connector calls :meth:`ConnectorContext.set_ghost_presence`; the ghost's presence is set
through the appservice, as the ghost. Only ghosts that exist already get presence: presence
alone never registers one.

Synapse takes a user offline half a minute after their last update unless they sync, which
ghosts never do: :meth:`GhostPresence.refresh_forever` repeats the presence of the ghosts that
are not offline (the most recently changed :data:`MAX_REFRESHED`).

Synapse with presence off (``presence.enabled: false``, common on large servers) accepts the
request and drops it. The first time a ghost goes online the bridge reads its presence back:
still ``offline`` means the homeserver keeps none, which is logged once; nothing more is sent
until the bridge restarts. Nothing else degrades: messages, avatars and names do not depend
on presence.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from bridge.core.errors import BridgeError
from bridge.core.ids import NetworkID, RemoteUserID
from bridge.core.matrix import MatrixAPI
from bridge.portal.store import Store

MATRIX_PRESENCE = ("online", "unavailable", "offline")
MAX_REMEMBERED = 10_000
REFRESH_SECONDS = 20.0
"""Synapse sets a user offline 30 s after their last presence update or sync; ghosts never
sync, so the bridge repeats each ghost's presence this often to keep it."""
MAX_REFRESHED = 1_000
"""At most this many ghosts' presence is kept fresh (those changed most recently); the others
fall back to offline, as their homeserver decides."""


class GhostPresence:
    def __init__(self, matrix: MatrixAPI, store: Store, log: logging.Logger) -> None:
        self._matrix = matrix
        self._store = store
        self._log = log
        self.kept: bool | None = None
        """Whether the homeserver keeps presence; None until the first ghost went online."""
        self._last: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self._probe = asyncio.Lock()
        """Held while the first presence is set and read back: later ones wait for its answer
        (dropping them lost an "away" that came right after "online")."""

    async def set(
        self, network: NetworkID, user: RemoteUserID, presence: str, status: str | None
    ) -> None:
        if presence not in MATRIX_PRESENCE:
            raise ValueError(f"presence must be one of {MATRIX_PRESENCE}, not {presence!r}")
        if self.kept is False:
            return
        ghost = await self._store.get_ghost(network, user)
        if ghost is None or self._last.get(ghost.mxid) == (presence, status):
            return
        if self.kept is None and presence == "online":  # what stays readable for 30 s
            async with self._probe:
                if self.kept is None:
                    await self._find_out(ghost.mxid, presence, status)
                    return
        if self.kept is None and self._probe.locked():
            async with self._probe:
                pass  # the first presence is being read back: its answer decides
        if self.kept is not False and await self._send(ghost.mxid, presence, status):
            self._remember(ghost.mxid, presence, status)

    async def refresh_forever(self) -> None:
        """Repeat every present ghost's presence so the homeserver does not time it out."""
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            if self.kept:
                await self.refresh()

    async def refresh(self) -> None:
        present = [(m, p) for m, p in reversed(self._last.items()) if p[0] != "offline"]
        for mxid, (presence, status) in present[:MAX_REFRESHED]:
            await self._send(mxid, presence, status)

    async def _find_out(self, mxid: str, presence: str, status: str | None) -> None:
        """Set the first presence and read it back: ``offline`` means the homeserver keeps
        none, logged once; nothing more is sent until the bridge restarts."""
        if not await self._send(mxid, presence, status):
            return
        try:
            self.kept = await self._matrix.get_presence(mxid) != "offline"
        except BridgeError as err:
            self._log.info("Presence of %s not read back: %s", mxid, err)
            return
        if not self.kept:
            self._log.info("The homeserver keeps no presence (Synapse: presence.enabled "
                           "is false): remote people's presence is not shown on their "
                           "ghosts until the bridge restarts")  # fmt: skip
            return
        self._remember(mxid, presence, status)

    async def _send(self, mxid: str, presence: str, status: str | None) -> bool:
        try:
            await self._matrix.set_presence(mxid, presence, status)
        except BridgeError as err:
            self._log.info("Presence of %s not set: %s", mxid, err)
            return False
        return True

    def _remember(self, mxid: str, presence: str, status: str | None) -> None:
        self._last[mxid] = (presence, status)
        self._last.move_to_end(mxid)
        while len(self._last) > MAX_REMEMBERED:
            self._last.popitem(last=False)
