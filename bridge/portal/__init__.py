"""The shared portal store, scoped by network (DESIGN §1).

``Store`` is the core's handle on the database; ``NetworkStore`` is the per-connector view.
"""

from __future__ import annotations

from .db import (
    StoreError,
    connector_upgrade_table,
    open_database,
    upgrade_connector_tables,
)
from .models import (
    FIRST_PART,
    NO_RECEIVER,
    BridgeUser,
    DeadLetter,
    Ghost,
    InboxItem,
    InboxRow,
    Login,
    Message,
    Portal,
    Reaction,
)
from .rows import fetch_rows
from .store import NetworkStore, Store

__all__ = [
    "FIRST_PART",
    "NO_RECEIVER",
    "BridgeUser",
    "DeadLetter",
    "Ghost",
    "InboxItem",
    "InboxRow",
    "Login",
    "Message",
    "NetworkStore",
    "Portal",
    "Reaction",
    "Store",
    "StoreError",
    "connector_upgrade_table",
    "fetch_rows",
    "open_database",
    "upgrade_connector_tables",
]
