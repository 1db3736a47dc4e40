"""Tenants' clouds and credentials as configured, and the relay account's device-code sign-in
kept sealed in the store (SQLite and PostgreSQL), against the emulator's identity platform
served over https. Hostile cases first."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest

from bridge.core import BridgeError
from bridge.core.pickle_key import PickleKey
from bridge.portal import NetworkStore
from bridge.portal.store import Store
from bridge.teams.cloud_config import CLOUDS, endpoints
from bridge.teams.config import TeamsConfig
from bridge.teams.login import DeviceCodeLogin
from bridge.teams.network import TeamsNetwork
from bridge.teams.protocol import TokenError
from bridge.teams.tenant import TenantLink
from bridge.teams.tokens import LoginSignIn, user_tokens
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401
from tests.teams_emulator.tls import app_certificate

GOOD_SECTION = {"tenants": [], "webhook": {"public_url": "https://bridge.example.org"}}


def _problems(tmp_path: Path, **entry: Any) -> list[str]:
    tenant = {"tenant_id": "00000000-0000-4000-8000-000000000001", "client_id": "c"} | entry
    section = GOOD_SECTION | {"tenants": [tenant]}
    return TeamsConfig.from_section(section).problems(section)


# --- configuration: hostile first -----------------------------------------------------------


def test_a_tenant_needs_exactly_one_credential(tmp_path: Path) -> None:
    assert any("give client_secret or certificate_file" in p for p in _problems(tmp_path))
    cert = tmp_path / "app.pem"
    app_certificate(cert)
    both = _problems(tmp_path, client_secret="s", certificate_file=str(cert))
    assert any("give client_secret or certificate_file" in p for p in both)
    assert _problems(tmp_path, certificate_file=str(cert)) == []


def test_an_expired_or_keyless_certificate_is_refused_at_start(tmp_path: Path) -> None:
    expired = tmp_path / "expired.pem"
    app_certificate(expired, expired=True)
    (problem,) = _problems(tmp_path, certificate_file=str(expired))
    assert "certificate_file: the certificate expired on" in problem
    keyless = tmp_path / "keyless.pem"
    keyless.write_text(expired.read_text().split("-----END PRIVATE KEY-----\n")[1])
    (problem,) = _problems(tmp_path, certificate_file=str(keyless))
    assert "holds no private key" in problem
    (problem,) = _problems(tmp_path, certificate_file=str(tmp_path / "missing.pem"))
    assert "cannot read" in problem


def test_an_unknown_cloud_and_an_http_authority_are_refused(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, client_secret="s", cloud="mars")
    assert problem.endswith(".cloud: one of global, usgov, usgovdod, china")
    (problem,) = _problems(tmp_path, client_secret="s", authority_host="http://login.example")
    assert "authority_host: must be https" in problem
    section = GOOD_SECTION | {
        "tenants": [{"tenant_id": "00000000-0000-4000-8000-000000000001", "client_id": "c",
                     "client_secret": "s"}],
        "authority": "http://login.example",
    }  # fmt: skip
    assert TeamsConfig.from_section(section).problems(section) == [
        "connectors.teams.authority: must be https (MSAL refuses anything else)"
    ]


# --- configuration: national clouds ------------------------------------------------------------


def test_each_cloud_has_its_own_authority_and_graph_audience() -> None:
    default = ("https://login.microsoftonline.com", "https://graph.microsoft.com/v1.0")
    glob = endpoints("", "", "", *default)
    assert (glob.authority_host, glob.graph_url, glob.graph_resource) == (
        *default, "https://graph.microsoft.com",
    )  # fmt: skip
    gov = endpoints("usgov", "", "", *default)
    assert (gov.authority_host, gov.graph_url, gov.graph_resource) == (
        "https://login.microsoftonline.us",
        "https://graph.microsoft.us/v1.0",
        "https://graph.microsoft.us",
    )
    china = endpoints("china", "", "", *default)
    assert (
        china.graph_resource == CLOUDS["china"].graph == "https://microsoftgraph.chinacloudapi.cn"
    )
    # The emulator standing in for a US Government tenant: its addresses, the cloud's audience.
    emu = endpoints("usgov", "https://127.0.0.1:9", "http://127.0.0.1:8/v1.0", *default)
    assert emu.graph_url == "http://127.0.0.1:8/v1.0"
    assert emu.graph_resource == "https://graph.microsoft.us"
    # A deployment not in the table: explicit endpoints, the Graph's origin as the audience.
    own = endpoints("", "https://login.sov.example", "https://graph.sov.example/v1.0", *default)
    assert own.graph_resource == "https://graph.sov.example"


# --- the relay account's sign-in ---------------------------------------------------------------


def _section(emu: Emulator, **tenant: str) -> dict[str, Any]:
    megan = emu.user("megan")
    return {
        "tenants": [
            {
                "tenant_id": emu.tenant_id,
                "client_id": emu.app["clientId"],
                "client_secret": emu.app["clientSecret"],
                "relay_username": megan["userPrincipalName"],
                **tenant,
            }
        ],
        "graph_url": emu.graph_url,
        "authority": emu.authority,
        "ca_file": emu.ca_file,
        "webhook": {"public_url": "https://bridge.example.org"},
    }


def _link(emu: Emulator, store: Store, **tenant: str) -> tuple[TeamsNetwork, TenantLink]:
    cfg = TeamsConfig.from_section(_section(emu, **tenant))
    ctx = MagicMock()
    ctx.log = logging.getLogger("test.teams.sign_in")
    ctx.store = NetworkStore(store, "teams")  # type: ignore[arg-type]
    ctx.federation.allows = MagicMock(return_value=True)
    link = TenantLink(cfg, cfg.tenants[0], MagicMock(), ctx.store, ctx.log)
    return TeamsNetwork(ctx, cfg, [link]), link


async def _device_login(emu: Emulator, net: TeamsNetwork, first_name: str) -> Any:
    process = DeviceCodeLogin(net, "@admin:hub.test")
    step = await process.submit(None)
    code = step.instructions.split("**")[1]
    user = emu.services.state.find_user(emu.user(first_name)["userPrincipalName"])
    assert user is not None
    emu.services.identity.approve_device_code(code, user)
    return await process.submit("done")


async def test_a_relay_without_a_sign_in_says_how_to_sign_in(
    emulator: Emulator,  # noqa: F811
    store: Store,
) -> None:
    store.secrets = PickleKey(b"k" * 32).secret_box()
    _, link = _link(emulator, store)
    assert link.relay is not None and link.relay_sign_in is not None
    with pytest.raises(TokenError) as caught:
        await link.relay_sign_in.provider.token()
    assert caught.value.error == "interaction_required"
    assert "send `login teams` to the bridge bot and sign in as megan" in caught.value.description
    assert emulator.requests("/*/oauth2/v2.0/token") == []  # no password to try


async def test_without_a_pickle_key_the_relay_sign_in_is_not_kept(
    emulator: Emulator,  # noqa: F811
    store: Store,
) -> None:
    net, _ = _link(emulator, store)
    with pytest.raises(BridgeError) as caught:
        await _device_login(emulator, net, "megan")
    assert "no pickle key" in caught.value.user_message
    assert await store.kv_get("teams", f"relay-sign-in:{emulator.tenant_id}") is None


async def test_the_relay_signs_in_once_by_device_code_and_stays_signed_in(
    emulator: Emulator,  # noqa: F811
    store: Store,
) -> None:
    store.secrets = PickleKey(b"k" * 32).secret_box()
    net, link = _link(emulator, store)
    step = await _device_login(emulator, net, "megan")
    assert step.kind == "complete" and step.login is None  # not a Matrix user's login
    assert "relay account" in step.instructions
    me = await link.relay.me.get()  # type: ignore[union-attr]
    assert me is not None and me.display_name == "Megan Bowen"
    # At rest: sealed, no refresh token in the clear.
    raw = await store.kv_get("teams", f"relay-sign-in:{emulator.tenant_id}")
    assert raw is not None and raw.startswith("pontis-sealed:")
    refresh = next(iter(emulator.services.state.refresh_tokens))
    assert refresh not in raw and "RefreshToken" not in raw
    # After a restart: the sealed sign-in serves, no password, no new device code.
    codes = len(emulator.requests("/*/oauth2/v2.0/devicecode"))
    _, again = _link(emulator, store)
    me = await again.relay.me.get()  # type: ignore[union-attr]
    assert me is not None and me.display_name == "Megan Bowen"
    assert len(emulator.requests("/*/oauth2/v2.0/devicecode")) == codes
    bodies = [r["body"] for r in emulator.requests("/*/oauth2/v2.0/token")]
    assert not any("grant_type=password" in b for b in bodies)


async def test_a_relay_sign_in_that_cannot_be_unsealed_asks_for_a_new_one(
    emulator: Emulator,  # noqa: F811
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.secrets = PickleKey(b"k" * 32).secret_box()
    net, _ = _link(emulator, store)
    await _device_login(emulator, net, "megan")
    store.secrets = PickleKey(b"x" * 32).secret_box()  # another pickle key
    _, after = _link(emulator, store)
    assert after.relay_sign_in is not None
    with pytest.raises(TokenError) as caught:
        await after.relay_sign_in.provider.token()
    assert caught.value.error == "interaction_required"
    assert "cannot be unsealed" in caplog.text
    assert "RefreshToken" not in caplog.text and "0.emu." not in caplog.text


async def test_someone_else_signing_in_gets_their_own_login(
    emulator: Emulator,  # noqa: F811
    store: Store,
) -> None:
    store.secrets = PickleKey(b"k" * 32).secret_box()
    net, _ = _link(emulator, store)
    step = await _device_login(emulator, net, "adele")
    assert step.login is not None and "token_cache" in step.login.metadata
    assert "refresh_token" not in step.login.metadata
    assert await store.kv_get("teams", f"relay-sign-in:{emulator.tenant_id}") is None


async def test_a_login_stored_before_msal_moves_into_the_token_cache(
    emulator: Emulator,  # noqa: F811
    store: Store,
) -> None:
    """A login row with a bare refresh token (the hand-written client's) keeps working."""
    provider = emulator.user_provider("adele")  # the old client's ROPC, for a refresh token
    await provider.get_authorization_token(emulator.graph_url + "/me")
    legacy = provider.refresh_token_value
    assert legacy
    cfg = TeamsConfig.from_section(_section(emulator))
    metadata: dict[str, Any] = {"tenant_id": emulator.tenant_id, "refresh_token": legacy}
    saves: list[dict[str, Any]] = []

    async def save() -> None:
        saves.append(dict(metadata))

    sign_in = LoginSignIn(cfg, cfg.tenants[0], metadata, save)
    await sign_in.provider.token()
    assert saves and "refresh_token" not in metadata and metadata["token_cache"]
    again = user_tokens(cfg, cfg.tenants[0], metadata["token_cache"])
    # (in a thread: MSAL blocks, and the emulator answers on this loop)
    assert (await asyncio.to_thread(again.silent, True)).get("access_token")


async def test_a_login_whose_sign_in_could_not_be_unsealed_asks_to_log_in_again(
    emulator: Emulator,  # noqa: F811
) -> None:
    """The store leaves out a ``token_cache`` it cannot open (bridge.portal.login_secrets): the
    login then fails to authenticate with a reason the user can act on, and nothing is sent."""
    cfg = TeamsConfig.from_section(_section(emulator))
    metadata: dict[str, Any] = {"tenant_id": emulator.tenant_id}  # token_cache dropped
    sign_in = LoginSignIn(cfg, cfg.tenants[0], metadata, _no_save)
    with pytest.raises(TokenError) as caught:
        await sign_in.provider.token()
    assert caught.value.error == "interaction_required"
    assert emulator.requests("/*/oauth2/v2.0/token") == []


async def _no_save() -> None:
    raise AssertionError("nothing to save")


def test_a_relay_not_signed_in_is_told_to_the_sender_as_such() -> None:
    from bridge.core import AuthExpired, PermanentError
    from bridge.teams.errors import as_bridge_error

    err = TokenError(400, "interaction_required", "the relay account … is not signed in")
    relayed = as_bridge_error(err, "send to chat 19:x")
    assert isinstance(relayed, PermanentError)
    assert "relay account is not signed in" in relayed.user_message
    # A Matrix user's own login that needs signing in again is an expired login, as before.
    assert isinstance(as_bridge_error(err, "send", delegated=True), AuthExpired)
