"""The backup and restore docs/postgresql.md prescribes, run as written: ``pg_dump -Fc`` of a
live database, ``pg_restore --no-owner`` into an empty one (and SQLite's ``.backup`` while the
store is open). After it every table and row is there, the bridge's device keys and a received
Megolm session still decrypt with the same pickle key, a sealed login secret opens, and with
another pickle key none of it does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from mautrix.crypto import InboundGroupSession, OlmAccount, OutboundGroupSession, PgCryptoStore
from mautrix.types import IdentityKey, RoomID, SessionID, SigningKey, UserID
from yarl import URL

from bridge.core.ids import LoginID, NetworkID
from bridge.core.pickle_key import PickleKey
from bridge.crypto.state import RoomStateStore
from bridge.portal.models import Login
from bridge.portal.store import Store
from tests.store_fixtures import DEFAULT_POSTGRES

BOT = UserID("@pontis:hub.test")
ROOM = RoomID("!portal:hub.test")
KEY = PickleKey(b"p" * 32)
OTHER_KEY = PickleKey(b"q" * 32)
TEAMS = NetworkID("teams")
TOKEN = "0.ARwA-refresh-token-of-adele"
TEXT = "said before the backup"


async def _run(*argv: str) -> None:
    tool = shutil.which(argv[0])
    assert tool, f"{argv[0]} is missing (Debian's postgresql-client or sqlite3)"
    process = await asyncio.create_subprocess_exec(
        tool, *argv[1:], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()


async def _open(url: str, key: PickleKey) -> tuple[Store, PgCryptoStore]:
    store = await Store.open(url)
    store.secrets = key.secret_box()
    await RoomStateStore.upgrade_table.upgrade(store.database)
    await PgCryptoStore.upgrade_table.upgrade(store.database)
    crypto = PgCryptoStore(BOT, key.olm_passphrase(), store.database)
    await crypto.open()
    return store, crypto


async def _fill(url: str) -> tuple[str, str, bytes]:
    """A live hub's worth of state: device keys, a received session, a sealed login.
    Returns (identity key, session id, a Megolm ciphertext of that session)."""
    store, crypto = await _open(url, KEY)
    try:
        account = OlmAccount()
        await crypto.put_device_id("PONTISDEV")
        await crypto.put_account(account)
        outbound = OutboundGroupSession(ROOM)
        inbound = InboundGroupSession(
            outbound.session_key, SigningKey(account.signing_key), IdentityKey(account.identity_key),
            ROOM,
        )  # fmt: skip
        await crypto.put_group_session(
            ROOM, IdentityKey(account.identity_key), SessionID(inbound.id), inbound
        )
        outbound.shared = True
        ciphertext = outbound.encrypt(TEXT)
        adele = Login(
            network=TEAMS, login_id=LoginID("adele"), user_mxid="@adele:hub.test",
            remote_name="Adele", metadata={"tenant": "contoso", "refresh_token": TOKEN},
        )  # fmt: skip
        await store.save_login(adele)
        return account.identity_key, inbound.id, ciphertext
    finally:
        await store.close()


async def _contents(url: str) -> dict[str, int]:
    """Row count per table, every table of the database."""
    store = await Store.open(url)
    try:
        if store.database.scheme.value == "sqlite":
            rows = await store.database.fetch("SELECT name FROM sqlite_master WHERE type='table'")
            names = [row["name"] for row in rows]
        else:
            rows = await store.database.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname='public'"
            )
            names = [row["tablename"] for row in rows]
        return {
            name: await store.database.fetchval(f'SELECT COUNT(*) FROM "{name}"') for name in names
        }
    finally:
        await store.close()


async def _check_restored(url: str, identity_key: str, session_id: str, ciphertext: bytes) -> None:
    store, crypto = await _open(url, KEY)
    try:
        account = await crypto.get_account()
        assert account is not None and account.identity_key == identity_key
        session = await crypto.get_group_session(ROOM, SessionID(session_id))
        assert session is not None and session.decrypt(ciphertext)[0] == TEXT
        login = await store.get_login(TEAMS, LoginID("adele"))
        assert login is not None and login.metadata["refresh_token"] == TOKEN
    finally:
        await store.close()
    # The dump without its pickle key: the sealed secret and the device keys stay closed.
    store, crypto = await _open(url, OTHER_KEY)
    try:
        login = await store.get_login(TEAMS, LoginID("adele"))
        assert login is not None and login.metadata.get("refresh_token") != TOKEN
        with pytest.raises(Exception, match=r"(?i)pickle|passphrase|decrypt|mac"):
            await crypto.get_account()
    finally:
        await store.close()


@pytest.fixture
async def databases() -> AsyncIterator[tuple[str, str]]:
    """Two empty PostgreSQL databases, the one backed up and the one restored into."""
    admin_url = os.environ.get("PONTIS_TEST_POSTGRES", DEFAULT_POSTGRES)
    admin = await asyncpg.connect(admin_url, timeout=5)
    names = [f"pontis_backup_{uuid.uuid4().hex[:10]}_{side}" for side in ("live", "restored")]
    for name in names:
        await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield str(URL(admin_url).with_path(names[0])), str(URL(admin_url).with_path(names[1]))
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_pg_dump_and_pg_restore_keep_store_and_crypto_tables(
    databases: tuple[str, str], tmp_path: Path
) -> None:
    live, restored = databases
    identity_key, session_id, ciphertext = await _fill(live)
    running = await Store.open(live)  # the bridge keeps running during the dump
    try:
        dump = tmp_path / "pontis.dump"
        await _run("pg_dump", "-Fc", "-f", str(dump), "-d", live)
    finally:
        await running.close()
    await _run("pg_restore", "--no-owner", "-d", restored, str(dump))

    before = await _contents(live)
    assert {"pontis_version", "login", "crypto_account", "crypto_megolm_inbound_session"} <= set(
        before
    )
    assert {name for name in before if name.startswith("mx_")}, before
    assert await _contents(restored) == before
    await _check_restored(restored, identity_key, session_id, ciphertext)


async def test_sqlite_backup_while_the_store_is_open(tmp_path: Path) -> None:
    live, copy = tmp_path / "pontis.db", tmp_path / "backup.db"
    identity_key, session_id, ciphertext = await _fill(f"sqlite:{live}")
    running = await Store.open(f"sqlite:{live}")
    try:
        await _run("sqlite3", str(live), f".backup {copy}")
    finally:
        await running.close()
    assert await _contents(f"sqlite:{copy}") == await _contents(f"sqlite:{live}")
    await _check_restored(f"sqlite:{copy}", identity_key, session_id, ciphertext)
