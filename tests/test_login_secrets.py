"""Secrets in logins are sealed at rest with the pickle key, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import logging

import pytest
from slixmpp.xmlstream import xmlstream

from bridge.core.ids import LoginID, NetworkID
from bridge.core.logs import setup_logging
from bridge.core.pickle_key import PickleKey
from bridge.portal.models import Login
from bridge.portal.store import Store
from tests.store_fixtures import StoreTarget

TEAMS = NetworkID("teams")
TOKEN = "0.ARwA-refresh-token-of-adele"


def login(login_id: str = "adele", **metadata: str) -> Login:
    return Login(
        network=TEAMS,
        login_id=LoginID(login_id),
        user_mxid="@adele:hub.test",
        remote_name="Adele",
        metadata={"tenant": "contoso", "refresh_token": TOKEN, **metadata},
    )


async def raw_metadata(store: Store, login_id: str) -> dict[str, str]:
    value = await store.database.fetchval(
        "SELECT metadata FROM login WHERE network=$1 AND login_id=$2", TEAMS, login_id
    )
    return dict(json.loads(value))


async def test_a_refresh_token_is_never_in_the_database_in_the_clear(store: Store) -> None:
    store.secrets = PickleKey(b"k" * 32).secret_box()
    await store.save_login(login())
    raw = await raw_metadata(store, "adele")
    assert TOKEN not in json.dumps(raw)
    assert raw["tenant"] == "contoso"  # only secrets are sealed
    got = await store.get_login(TEAMS, LoginID("adele"))
    assert got is not None and got.metadata["refresh_token"] == TOKEN
    assert [x.metadata["refresh_token"] for x in await store.list_logins()] == [TOKEN]


async def test_plaintext_rows_of_before_are_sealed_on_start(store_target: StoreTarget) -> None:
    store = await store_target.open()
    try:
        await store.save_login(login("old", client_secret="s3cret"))  # no pickle key yet
        assert (await raw_metadata(store, "old"))["refresh_token"] == TOKEN
        store.secrets = PickleKey(b"k" * 32).secret_box()
        assert await store.seal_login_secrets() == 1
        raw = await raw_metadata(store, "old")
        assert TOKEN not in json.dumps(raw) and "s3cret" not in json.dumps(raw)
        assert await store.seal_login_secrets() == 0  # nothing left to do
        got = await store.get_login(TEAMS, LoginID("old"))
        assert got is not None
        assert (got.metadata["refresh_token"], got.metadata["client_secret"]) == (TOKEN, "s3cret")
    finally:
        await store.close()


async def test_another_key_or_no_key_cannot_read_sealed_logins(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The login still loads (the bridge starts), without the secret; the log says why."""
    store.secrets = PickleKey(b"k" * 32).secret_box()
    await store.save_login(login())
    store.secrets = PickleKey(b"x" * 32).secret_box()
    got = await store.get_login(TEAMS, LoginID("adele"))
    assert got is not None and "refresh_token" not in got.metadata
    assert got.metadata["tenant"] == "contoso"
    assert "teams/adele: refresh_token unreadable" in caplog.text
    assert "must log in again" in caplog.text
    store.secrets = None
    got = await store.get_login(TEAMS, LoginID("adele"))
    assert got is not None and "refresh_token" not in got.metadata
    assert "none is loaded" in caplog.text
    assert TOKEN not in caplog.text


async def test_a_sealed_token_moved_to_another_login_does_not_open(store: Store) -> None:
    store.secrets = PickleKey(b"k" * 32).secret_box()
    await store.save_login(login("adele"))
    await store.save_login(login("mallory", refresh_token="mallory-token"))
    stolen = (await raw_metadata(store, "adele"))["refresh_token"]
    await store.database.execute(
        "UPDATE login SET metadata=$1 WHERE login_id='mallory'",
        json.dumps({"refresh_token": stolen}),
    )
    got = await store.get_login(TEAMS, LoginID("mallory"))
    assert got is not None and got.metadata.get("refresh_token") != TOKEN
    assert "refresh_token" not in got.metadata


async def test_a_login_secret_is_not_logged_even_at_debug(store_target: StoreTarget) -> None:
    """Without a pickle key the secret is stored as it is; the database driver's DEBUG log
    (statements with their parameters) must not carry it to the operator's log."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("aiosqlite").level)
    out = io.StringIO()
    try:
        setup_logging("DEBUG", "text", [])
        root.handlers[0].stream = out  # type: ignore[attr-defined]
        store = await store_target.open()
        try:
            await store.save_login(Login(NetworkID("teams"), LoginID("a"), "@a:hub", "A",
                                         {"refresh_token": "never-in-a-log-0123"}))  # fmt: skip
        finally:
            await store.close()
    finally:
        root.handlers[:], _, aiosqlite_level = saved
        root.setLevel(saved[1])
        logging.getLogger("aiosqlite").setLevel(aiosqlite_level)
    assert "never-in-a-log-0123" not in out.getvalue()


def test_xmpp_stanzas_and_the_component_handshake_are_not_logged_even_at_debug() -> None:
    """slixmpp logs each stanza it sends at DEBUG: message bodies, and the component's
    handshake, a SHA-1 of the stream id and the secret from which a weak secret can be guessed
    offline. The operator's DEBUG log shows neither."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("slixmpp").level)
    out = io.StringIO()
    try:
        setup_logging("DEBUG", "text", [])
        root.handlers[0].stream = out  # type: ignore[attr-defined]
        xmlstream.log.debug("SEND: %s", "<handshake>0f1e2d3c4b5a69788796a5b4c3d2e1f0</handshake>")
        logging.getLogger("pontis.xmpp").debug("our own debug line")
    finally:
        root.handlers[:], _, slixmpp_level = saved
        root.setLevel(saved[1])
        logging.getLogger("slixmpp").setLevel(slixmpp_level)
    assert "0f1e2d3c4b5a" not in out.getvalue()
    assert "our own debug line" in out.getvalue()
