"""Schema migrations of the shared store, as small numbered steps.

Version 1 creates the whole *latest* schema and jumps straight to :data:`LATEST_VERSION`, so a
fresh database never replays history. To change the schema:

1. edit ``v01_latest.py`` to the new latest shape;
2. add ``vNN_<what>.py`` with ``async def upgrade(conn, scheme) -> None`` that brings a database
   at version NN-1 to NN, and append it to :data:`STEPS`;
3. bump :data:`LATEST_VERSION` to NN.

The version lives in the ``pontis_version`` table; a database newer than this code refuses to
start. Connector-private tables use the same mechanism with their own table, see
:func:`bridge.portal.db.connector_upgrade_table`.
"""

from __future__ import annotations

import logging

from mautrix.util.async_db import UpgradeTable
from mautrix.util.async_db.upgrade import Upgrade

from .v01_latest import create_latest
from .v02_remote_inbox import upgrade as upgrade_v02
from .v03_kv_written_at import upgrade as upgrade_v03
from .v04_audit import upgrade as upgrade_v04

LATEST_VERSION = 4
VERSION_TABLE = "pontis_version"

# Steps from version N-1 to N for N = 2…LATEST_VERSION, in order.
STEPS: tuple[tuple[str, Upgrade], ...] = (
    ("remote inbox; dead letters name their network and portal", upgrade_v02),
    ("key-value rows say when they were last written, for pruning markers", upgrade_v03),
    ("the audit log: admin actions and policy refusals", upgrade_v04),
)


def build_upgrade_table(log: logging.Logger | None = None) -> UpgradeTable:
    """A fresh upgrade table for the shared schema (no module-level registry is mutated)."""
    if len(STEPS) != LATEST_VERSION - 1:
        raise RuntimeError("migrations: STEPS does not match LATEST_VERSION")
    table = UpgradeTable(version_table_name=VERSION_TABLE, database_name="Pontis database", log=log)
    table.register(
        create_latest,
        description="create the latest schema",
        upgrades_to=LATEST_VERSION,
    )
    for description, step in STEPS:
        table.register(step, description=description)
    return table


__all__ = ["LATEST_VERSION", "STEPS", "VERSION_TABLE", "build_upgrade_table"]
