"""The network clients the core acts through, and how it picks one."""

from __future__ import annotations

import logging
from collections.abc import ItemsView, ValuesView
from dataclasses import dataclass

from bridge.core.connector import ClientFeatures, NetworkClient, NetworkConnector
from bridge.core.errors import NotSupported
from bridge.core.ids import LoginID, NetworkID
from bridge.core.metrics import Metrics
from bridge.portal.models import Portal


@dataclass(slots=True)
class LoadedClient:
    network: NetworkID
    client: NetworkClient
    features: ClientFeatures
    user_mxid: str | None
    """The Matrix user this login belongs to; ``None`` for a shared client."""
    connected: bool = False
    state_message: str = "connecting"


class ClientRegistry:
    def __init__(
        self, connectors: dict[NetworkID, NetworkConnector], metrics: Metrics, log: logging.Logger
    ) -> None:
        self._connectors = connectors
        self._metrics = metrics
        self._log = log
        self._clients: dict[tuple[NetworkID, LoginID], LoadedClient] = {}

    def items(self) -> ItemsView[tuple[NetworkID, LoginID], LoadedClient]:
        return self._clients.items()

    def values(self) -> ValuesView[LoadedClient]:
        return self._clients.values()

    def add(
        self, network: NetworkID, client: NetworkClient, user_mxid: str | None = None
    ) -> LoadedClient:
        loaded = LoadedClient(network, client, ClientFeatures.of(client), user_mxid)
        self._clients[(network, client.login_id)] = loaded
        return loaded

    def remove(self, network: NetworkID, login_id: LoginID) -> LoadedClient | None:
        return self._clients.pop((network, login_id), None)

    def set_state(
        self, network: NetworkID, login_id: LoginID, *, connected: bool, message: str
    ) -> None:
        loaded = self._clients.get((network, login_id))
        if loaded is not None:
            loaded.connected, loaded.state_message = connected, message
        self._metrics.client_state.labels(network, login_id or "shared").set(int(connected))
        log = self._log.info if connected else self._log.warning
        log(
            "Client %s/%s %s%s",
            network,
            login_id or "shared",
            "connected" if connected else "disconnected",
            f": {message}" if message else "",
        )

    def client_for(self, network: NetworkID, login: LoginID, user_mxid: str | None) -> LoadedClient:
        """The client to act with: the login named, else the user's own, else the shared one.

        ``login`` is ``""`` for portals every Matrix user shares; there a user's own login
        wins over the shared client, so they act as themselves where the network can tell."""
        candidates = [c for (net, _), c in self._clients.items() if net == network]
        exact = self._clients.get((network, login)) if login else None
        if exact is not None:
            return exact
        if user_mxid is not None:
            for loaded in candidates:
                if loaded.user_mxid == user_mxid:
                    return loaded
        for loaded in candidates:
            if loaded.user_mxid is None:
                return loaded
        name = (
            self._connectors[network].info.display_name if network in self._connectors else network
        )
        raise NotSupported(
            f"no {network} client for {user_mxid or 'remote event'}",
            user_message=f"You are not logged in to {name}. Send `login {network}` to the bridge bot.",
        )

    def client_or_none(self, portal: Portal, user: str) -> LoadedClient | None:
        try:
            return self.client_for(portal.network, portal.receiver, user)
        except NotSupported:
            return None
