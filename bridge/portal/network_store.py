"""The store as one connector sees it (:class:`NetworkStore`)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mautrix.util.async_db import Database

from bridge.core.ids import (
    LoginID,
    NetworkID,
    PartID,
    PortalKey,
    RemoteChatID,
    RemoteMessageID,
    RemoteUserID,
)

from .models import (
    FIRST_PART,
    NO_RECEIVER,
    Ghost,
    Login,
    Message,
    Portal,
    Reaction,
)

if TYPE_CHECKING:
    from .login_secrets import Sealer
    from .store import Store


class NetworkStore:
    """The store as one connector sees it: only rows of its own network.

    Connectors read through this view; the core writes portals, ghosts and messages. Private
    tables go in :attr:`database` with their own migrations
    (:func:`bridge.portal.db.upgrade_connector_tables`).
    """

    def __init__(
        self,
        store: Store,
        network: NetworkID,
        find_portal: Callable[[PortalKey], Awaitable[Portal | None]] | None = None,
    ) -> None:
        self._store = store
        self._network = network
        self._find_portal = find_portal or store.get_portal

    @property
    def network(self) -> NetworkID:
        return self._network

    @property
    def database(self) -> Database:
        return self._store.database

    async def get_portal(
        self, remote_id: RemoteChatID, receiver: LoginID = NO_RECEIVER
    ) -> Portal | None:
        """The portal, from the core's portal cache when the bridge runs: a copy, so the
        connector never sees the core change it mid-update."""
        portal = await self._find_portal(PortalKey(self._network, remote_id, receiver))
        if portal is None:
            return None
        return dataclasses.replace(portal, metadata=copy.deepcopy(portal.metadata))

    async def list_portals(self) -> list[Portal]:
        return await self._store.list_portals(self._network)

    async def get_ghost(self, remote_id: RemoteUserID) -> Ghost | None:
        return await self._store.get_ghost(self._network, remote_id)

    async def list_logins(self) -> list[Login]:
        return await self._store.list_logins(network=self._network)

    async def get_login(self, login_id: LoginID) -> Login | None:
        return await self._store.get_login(self._network, login_id)

    async def save_login(self, login: Login) -> None:
        """Save ``login`` (e.g. refreshed tokens in its metadata); it must be of this network."""
        if login.network != self._network:
            raise ValueError(
                f"login {login.login_id!r} belongs to network {login.network!r},"
                f" not {self._network!r}"
            )
        await self._store.save_login(login)

    async def get_message(
        self,
        portal_remote_id: RemoteChatID,
        remote_id: RemoteMessageID,
        part_id: PartID = FIRST_PART,
        receiver: LoginID = NO_RECEIVER,
    ) -> Message | None:
        key = PortalKey(self._network, portal_remote_id, receiver)
        return await self._store.get_message(key, remote_id, part_id)

    async def list_reactions(
        self, portal: PortalKey, message_id: RemoteMessageID, sender_id: str | None = None
    ) -> list[Reaction]:
        if portal.network != self._network:
            raise ValueError(f"portal {portal} is not of network {self._network!r}")
        return await self._store.list_reactions(portal, message_id, sender_id)

    async def kv_get(self, key: str) -> str | None:
        return await self._store.kv_get(self._network, key)

    async def kv_set(self, key: str, value: str) -> None:
        await self._store.kv_set(self._network, key, value)

    async def kv_delete(self, key: str) -> None:
        await self._store.kv_delete(self._network, key)

    # A connector's own secrets (a relay account's sign-in), sealed like those in logins'
    # metadata and bound to (network, key): a value copied under another key does not open.

    def _sealer(self) -> Sealer:
        if self._store.secrets is None:
            raise ValueError(
                "no pickle key is loaded (encryption.pickle_key_file or PONTIS_PICKLE_KEY), and "
                "this secret is never stored unsealed"
            )
        return self._store.secrets

    async def sealed_get(self, key: str) -> str | None:
        """What :meth:`sealed_set` stored under ``key``; ValueError if it cannot be opened."""
        raw = await self.kv_get(key)
        if raw is None:
            return None
        return self._sealer().open(raw, context=f"kv\x1f{self._network}\x1f{key}")

    async def sealed_set(self, key: str, value: str) -> None:
        """Keep ``value`` sealed with the pickle key (ValueError without one)."""
        sealed = self._sealer().seal(value, context=f"kv\x1f{self._network}\x1f{key}")
        await self.kv_set(key, sealed)
