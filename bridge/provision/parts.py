"""What the provisioning endpoints act with: the hub's parts, and the API's own."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bridge.core.adopt import RoomBridging
from bridge.core.audit import AuditLog
from bridge.core.clients import ClientRegistry
from bridge.core.connector import NetworkConnector
from bridge.core.ids import NetworkID
from bridge.core.matrix import MatrixAPI
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.portal.store import Store
from bridge.provision.auth import Authenticator


@dataclass(frozen=True, slots=True)
class ApiParts:
    auth: Authenticator
    store: Store
    matrix: MatrixAPI
    portals: PortalManager
    bridging: RoomBridging
    clients: ClientRegistry
    connectors: dict[NetworkID, NetworkConnector]
    permissions: Permissions
    audit: AuditLog
    log: logging.Logger


class Endpoints:
    """A group of endpoints: the parts as attributes (``self._store``, ``self._auth``, …)."""

    def __init__(self, parts: ApiParts) -> None:
        self._auth = parts.auth
        self._store = parts.store
        self._matrix = parts.matrix
        self._portals = parts.portals
        self._bridging = parts.bridging
        self._clients = parts.clients
        self._connectors = parts.connectors
        self._permissions = parts.permissions
        self._audit = parts.audit
        self._log = parts.log
