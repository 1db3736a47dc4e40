"""Remote people's presence on their ghosts, where the homeserver keeps presence.

A connector calls :meth:`ConnectorContext.set_ghost_presence`; the ghost's presence is set
through the appservice, as the ghost. Only ghosts that exist already get presence: presence
alone never registers one.

Synapse with presence off (``presence.enabled: false``, common on large servers) accepts the
request and drops it. The first time a ghost goes online the bridge reads its presence back:
still ``offline`` means the homeserver keeps none, which is logged once; nothing more is sent
until the bridge restarts. Nothing else degrades: messages, avatars and names do not depend
on presence.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from bridge.core.errors import BridgeError
from bridge.core.ids import NetworkID, RemoteUserID
from bridge.core.matrix import MatrixAPI
from bridge.portal.store import Store

MATRIX_PRESENCE = ("online", "unavailable", "offline")
MAX_REMEMBERED = 10_000


class GhostPresence:
    def __init__(self, matrix: MatrixAPI, store: Store, log: logging.Logger) -> None:
        self._matrix = matrix
        self._store = store
        self._log = log
        self.kept: bool | None = None
        """Whether the homeserver keeps presence; None until the first ghost went online."""
        self._last: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self._probing = False

    async def set(
        self, network: NetworkID, user: RemoteUserID, presence: str, status: str | None
    ) -> None:
        if presence not in MATRIX_PRESENCE:
            raise ValueError(f"presence must be one of {MATRIX_PRESENCE}, not {presence!r}")
        if self.kept is False or (self.kept is None and self._probing):
            return  # none kept, or being found out (by a call that logs it once)
        ghost = await self._store.get_ghost(network, user)
        if ghost is None or self._last.get(ghost.mxid) == (presence, status):
            return
        if self.kept is False or (self.kept is None and self._probing):
            return  # found out while we read the ghost
        probe = self.kept is None and presence == "online"
        self._probing = self._probing or probe
        try:
            await self._matrix.set_presence(ghost.mxid, presence, status)
            if probe:
                self.kept = await self._matrix.get_presence(ghost.mxid) != "offline"
                if not self.kept:
                    self._log.info("The homeserver keeps no presence (Synapse: presence.enabled "
                                   "is false): remote people's presence is not shown on their "
                                   "ghosts until the bridge restarts")  # fmt: skip
                    return
        except BridgeError as err:
            self._log.info("Presence of %s not set: %s", ghost.mxid, err)
            return
        finally:
            if probe:
                self._probing = False
        self._last[ghost.mxid] = (presence, status)
        self._last.move_to_end(ghost.mxid)
        while len(self._last) > MAX_REMEMBERED:
            self._last.popitem(last=False)
