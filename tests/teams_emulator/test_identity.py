"""The identity platform: grants, OAuth2 errors, device codes and the bearer check."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from bridge.teams.protocol import (
    OAuthTokenProvider,
    TokenError,
    poll_device_code,
    start_device_code,
)

from .conftest import USER_SCOPES, Emulator


async def _token(emulator: Emulator, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    url = f"{emulator.base}/{emulator.tenant_id}/oauth2/v2.0/token"
    async with emulator.session.post(url, data=form) as response:
        return response.status, await response.json()


async def test_client_credentials_gives_an_app_token(emulator: Emulator) -> None:
    status, body = await _token(
        emulator,
        {
            "grant_type": "client_credentials",
            "client_id": emulator.app["clientId"],
            "client_secret": emulator.app["clientSecret"],
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    assert status == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] > 3000
    assert body["access_token"].count(".") == 2
    assert "refresh_token" not in body
    grant = emulator.services.state.tokens[body["access_token"]]
    assert grant.user_id is None and "Chat.Read.All" in grant.scopes


async def test_wrong_client_secret_is_invalid_client(emulator: Emulator) -> None:
    provider = emulator.app_provider(secret="wrong")
    with pytest.raises(TokenError) as caught:
        await provider.get_authorization_token(emulator.graph_url + "/chats")
    assert caught.value.status == 401 and caught.value.error == "invalid_client"
    assert caught.value.description.startswith("AADSTS7000215")


async def test_unknown_tenant_and_client(emulator: Emulator) -> None:
    url = f"{emulator.base}/not-a-tenant/oauth2/v2.0/token"
    async with emulator.session.post(url, data={"grant_type": "client_credentials"}) as response:
        body = await response.json()
    assert response.status == 400 and body["error_codes"] == [90002]
    status, body = await _token(
        emulator, {"grant_type": "client_credentials", "client_id": "nobody"}
    )
    assert status == 400 and body["error"] == "unauthorized_client"


async def test_client_credentials_needs_a_default_scope(emulator: Emulator) -> None:
    app = emulator.app
    form = {
        "grant_type": "client_credentials",
        "client_id": app["clientId"],
        "client_secret": app["clientSecret"],
    }
    status, body = await _token(emulator, form | {"scope": "Chat.Read.All"})
    assert status == 400 and body["error"] == "invalid_scope"


async def test_password_grant_and_refresh(emulator: Emulator) -> None:
    provider = emulator.user_provider("adele")
    first = await provider.get_authorization_token(emulator.graph_url + "/me")
    assert provider.last_response["scope"].split() == sorted(USER_SCOPES)
    refresh = provider.refresh_token_value
    assert refresh is not None
    provider.invalidate()
    second = await provider.get_authorization_token(emulator.graph_url + "/me")
    assert second != first
    grant = emulator.services.state.tokens[second]
    assert grant.user_id == emulator.user("adele")["id"]


async def test_wrong_password_is_invalid_grant(emulator: Emulator) -> None:
    status, body = await _token(
        emulator,
        {
            "grant_type": "password",
            "client_id": emulator.app["clientId"],
            "username": emulator.user("adele")["userPrincipalName"],
            "password": "guess",
            "scope": "User.Read",
        },
    )
    assert status == 400 and body["error"] == "invalid_grant" and body["error_codes"] == [50126]


async def test_unconsented_scope_is_refused(emulator: Emulator) -> None:
    status, body = await _token(
        emulator,
        {
            "grant_type": "password",
            "client_id": emulator.app["clientId"],
            "username": emulator.user("adele")["userPrincipalName"],
            "password": "adele-pw",
            "scope": "Mail.Send",
        },
    )
    assert status == 400 and body["error_codes"] == [65001]


async def test_device_code_flow(emulator: Emulator) -> None:
    app_id = emulator.app["clientId"]
    started = await start_device_code(
        emulator.session, emulator.base, emulator.tenant_id, app_id, ["Chat.ReadWrite", "User.Read"]
    )
    assert started["verification_uri"].endswith("/_emulator/devicelogin")
    assert started["user_code"] in started["message"]

    status, body = await _token(
        emulator,
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "client_id": app_id,
            "device_code": started["device_code"],
        },
    )
    assert status == 400 and body["error"] == "authorization_pending"

    async def approve() -> None:
        await asyncio.sleep(0.1)
        await emulator.control(
            "POST",
            "/devicecodes/approve",
            {"userCode": started["user_code"], "user": emulator.user("megan")["id"]},
        )

    approval = asyncio.create_task(approve())
    tokens = await poll_device_code(
        emulator.session,
        emulator.base,
        emulator.tenant_id,
        app_id,
        started["device_code"],
        interval=0.05,
        give_up_after=5,
    )
    await approval
    assert "refresh_token" in tokens and "id_token" in tokens
    assert (
        emulator.services.state.tokens[tokens["access_token"]].user_id
        == emulator.user("megan")["id"]
    )

    # The refresh token keeps the login alive and is usable with the SDK.
    provider = OAuthTokenProvider.refresh_token(
        emulator.session,
        emulator.base,
        emulator.tenant_id,
        app_id,
        tokens["refresh_token"],
        allowed_hosts=["127.0.0.1"],
    )
    me = await emulator._client(provider).me.get()
    assert me is not None and me.display_name == "Megan Bowen"


async def test_device_code_expires(emulator: Emulator) -> None:
    app_id = emulator.app["clientId"]
    started = await start_device_code(
        emulator.session, emulator.base, emulator.tenant_id, app_id, ["User.Read"]
    )
    await emulator.control("POST", "/clock", {"advanceSeconds": 901})
    with pytest.raises(TokenError) as caught:
        await poll_device_code(
            emulator.session,
            emulator.base,
            emulator.tenant_id,
            app_id,
            started["device_code"],
            interval=0.05,
            give_up_after=1,
        )
    assert caught.value.error == "expired_token"


async def test_expired_token_is_401_with_www_authenticate(emulator: Emulator) -> None:
    graph = emulator.app_client()
    await graph.chats.get()
    await emulator.control("POST", "/clock", {"advanceSeconds": 3600})
    with pytest.raises(ODataError) as caught:
        await graph.chats.get()
    assert caught.value.response_status_code == 401
    assert (
        caught.value.error is not None and caught.value.error.code == "InvalidAuthenticationToken"
    )
    assert caught.value.error.message == "Lifetime validation failed, the token is expired."
    [last] = emulator.requests("/v1.0/chats")[-1:]
    assert last["status"] == 401
    async with emulator.session.get(
        emulator.graph_url + "/chats", headers={"Authorization": "Bearer x.y.z"}
    ) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_me_needs_a_delegated_token(emulator: Emulator) -> None:
    with pytest.raises(ODataError) as caught:
        await emulator.app_client().me.get()
    assert caught.value.response_status_code == 400


async def test_openid_configuration(emulator: Emulator) -> None:
    url = f"{emulator.base}/{emulator.tenant_id}/v2.0/.well-known/openid-configuration"
    async with emulator.session.get(url) as response:
        body = await response.json()
    assert body["token_endpoint"] == f"{emulator.base}/{emulator.tenant_id}/oauth2/v2.0/token"
    assert body["issuer"].endswith(f"/{emulator.tenant_id}/v2.0")


async def test_azure_identity_refuses_an_http_authority() -> None:
    """Why sdk.OAuthTokenProvider exists: azure-identity insists on an https authority."""
    from azure.identity.aio import ClientSecretCredential

    with pytest.raises(ValueError, match="https"):
        ClientSecretCredential("t", "c", "s", authority="http://127.0.0.1:8765")
