"""Opening the database and running migrations (shared schema and connector-private tables)."""

from __future__ import annotations

import logging
from typing import Any

from mautrix.util.async_db import (
    Database,
    DatabaseException,
    UnsupportedDatabaseVersion,
    UpgradeTable,
)
from mautrix.util.logging import TraceLogger
from yarl import URL

from .migrations import LATEST_VERSION, build_upgrade_table

SUPPORTED_SCHEMES = ("sqlite", "sqlite3", "postgres", "postgresql")


class StoreError(RuntimeError):
    """The database cannot be used as it is (wrong version, foreign owner, bad URL)."""


def _trace_logger(log: logging.Logger | None, suffix: str) -> TraceLogger:
    # mautrix calls log.trace(), which only its TraceLogger has. Importing mautrix installs
    # TraceLogger as the logger class, so a child created now is one unless it already exists.
    base = log.name if log is not None else "pontis"
    for name in (f"{base}.{suffix}", f"pontis.{suffix}"):
        candidate = logging.getLogger(name)
        if isinstance(candidate, TraceLogger):
            return candidate
    return TraceLogger(f"pontis.{suffix}")


def _check_url(url: str) -> None:
    scheme = URL(url).scheme
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r} in database.url; use "
            "'sqlite:/path/to/pontis.db' or 'postgres://user:password@host/dbname'"
        )


async def _upgrade(db: Database, table: UpgradeTable) -> None:
    try:
        await table.upgrade(db)
    except UnsupportedDatabaseVersion as e:
        found = await db.fetchval(f"SELECT MAX(version) FROM {table.version_table_name}")
        known = len(table.upgrades)
        raise StoreError(
            f"{table.database_name} schema is version {found} but this Pontis only knows up "
            f"to {known}; upgrade Pontis or restore a backup"
        ) from e


async def _keep_session(conn: object) -> None:
    return None


async def open_database(
    url: str,
    *,
    log: logging.Logger | None = None,
    db_args: dict[str, Any] | None = None,
) -> Database:
    """Connect to ``url`` and bring the shared schema to the latest version.

    ``url`` is ``sqlite:<path>``, ``sqlite::memory:`` or ``postgres[ql]://…``. ``db_args`` go to
    mautrix (``min_size``/``max_size``; for PostgreSQL also any ``asyncpg.create_pool`` argument,
    e.g. ``server_settings``). Raises ``ValueError`` for an unknown scheme and
    :class:`StoreError` for a database that is newer than this code or owned by another program.
    """
    _check_url(url)
    args = dict(db_args or {})
    if url.startswith(("postgres://", "postgresql://")):
        # asyncpg resets every connection returned to the pool (UNLISTEN, RESET ALL, advisory
        # unlocks): a round trip per store call, for session state the store never sets.
        args.setdefault("reset", _keep_session)
    db = Database.create(
        url,
        db_args=args,
        upgrade_table=build_upgrade_table(_trace_logger(log, "db.upgrade")),
        log=_trace_logger(log, "db"),
        owner_name="pontis",
        ignore_foreign_tables=False,
    )
    # Database.start() would run the upgrade too, but without our error message; the upgrade
    # table is attached only after the owner and foreign-table checks have passed.
    table = db.upgrade_table
    assert table is not None
    db.upgrade_table = None
    try:
        await db.start()
        await _upgrade(db, table)
    except DatabaseException as e:
        await db.stop()
        if isinstance(e, StoreError):
            raise
        explanation = f" ({e.explanation})" if e.explanation else ""
        raise StoreError(f"cannot use database: {e}{explanation}") from e
    except BaseException:
        await db.stop()
        raise
    db.upgrade_table = table
    return db


def connector_upgrade_table(network: str, log: logging.Logger | None = None) -> UpgradeTable:
    """An empty upgrade table for a connector's private tables (``<network>_version``).

    Register steps on it like on any mautrix ``UpgradeTable`` (the first step creates the latest
    schema of the connector's tables, prefixed ``<network>_``) and pass it to
    :func:`upgrade_connector_tables` when the connector starts.
    """
    return UpgradeTable(
        version_table_name=f"{network}_version",
        database_name=f"{network} connector tables",
        log=_trace_logger(log, f"db.upgrade.{network}"),
    )


async def upgrade_connector_tables(db: Database, table: UpgradeTable) -> None:
    """Run ``table``'s pending migrations on the shared database.

    Raises :class:`StoreError` if those tables are newer than the connector's code.
    """
    await _upgrade(db, table)


__all__ = [
    "LATEST_VERSION",
    "StoreError",
    "connector_upgrade_table",
    "open_database",
    "upgrade_connector_tables",
]
