"""MSAL against the emulator's identity platform (over https with a test CA): app tokens by
secret and by certificate, a national cloud's own Graph audience, device-code sign-ins kept as
a token cache, and one fresh token after Graph's 401. Hostile cases first."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from kiota_abstractions.api_error import APIError
from msgraph import GraphServiceClient

from bridge.teams.protocol import graph_client
from bridge.teams.protocol.msal_auth import (
    Authority,
    MsalTokenProvider,
    UserTokens,
    app_tokens,
    certificate_credential,
    raise_for,
    signed_in_as,
)
from bridge.teams.protocol.oauth import TokenError
from graph_emulator import create_app
from graph_emulator.services import SERVICES, Services

from .conftest import fast_config
from .tls import TestCA, app_certificate, serve_https_too

USGOV_GRAPH = "https://graph.microsoft.us"
SCOPES = ["Chat.ReadWrite", "User.Read"]


@dataclass
class Cloudy:
    """The emulator with a global tenant (Contoso, its app holding a certificate) and a US
    Government tenant (Fabrikam)."""

    services: Services
    graph_url: str
    authority: str
    ca_file: str
    seeded: dict[str, Any]
    cert_file: Path
    tmp: Path
    http: list[httpx.AsyncClient]

    def tenant(self, index: int) -> dict[str, Any]:
        return dict(self.seeded["tenants"][index])

    def authority_for(self, index: int, resource: str = "https://graph.microsoft.com") -> Authority:
        tenant = self.tenant(index)
        return Authority(
            self.authority, tenant["id"], tenant["apps"][0]["clientId"], resource, self.ca_file
        )

    def client(self, provider: MsalTokenProvider) -> GraphServiceClient:
        http = httpx.AsyncClient()
        self.http.append(http)
        return graph_client(self.graph_url, provider, http)

    def token_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.services.wire.requests if r["path"].endswith("/oauth2/v2.0/token")]


@pytest.fixture
async def cloudy(tmp_path: Path) -> AsyncIterator[Cloudy]:
    ca = TestCA.create()
    cert_file = tmp_path / "bridge.pem"
    cert_pem = app_certificate(cert_file)
    seed = {
        "tenants": [
            {
                "displayName": "Contoso",
                "apps": [{"displayName": "Pontis", "clientSecret": "s3cret",
                          "certificates": [cert_pem]}],
                "users": [{"displayName": "Adele Vance", "password": "adele-pw"}],
            },
            {
                "displayName": "Fabrikam",
                "cloud": "usgov",
                "apps": [{"displayName": "Pontis", "clientSecret": "gov-s3cret"}],
                "users": [{"displayName": "Grady Archie", "password": "grady-pw"}],
            },
        ]
    }  # fmt: skip
    app = create_app(fast_config())
    runner, plain, secure = await serve_https_too(app, ca.server_context(tmp_path))
    services = app[SERVICES]
    from graph_emulator import seed as seeding

    seeded = seeding.apply(services, seed, plain + "/v1.0")
    state = Cloudy(
        services, plain + "/v1.0", secure, str(ca.write_bundle(tmp_path / "ca.pem")), seeded,
        cert_file, tmp_path, [],
    )  # fmt: skip
    try:
        yield state
    finally:
        for http in state.http:
            await http.aclose()
        await runner.cleanup()


def _app_provider(cloudy: Cloudy, index: int = 0, **authority: Any) -> MsalTokenProvider:
    auth = cloudy.authority_for(index, **authority)
    secret = cloudy.tenant(index)["apps"][0]["clientSecret"]
    return app_tokens(auth, secret, ["127.0.0.1"])


# --- hostile first --------------------------------------------------------------------------


async def test_msal_refuses_an_http_authority(cloudy: Cloudy) -> None:
    """Why the emulator speaks https to MSAL: MSAL will not send a secret over plain http."""
    auth = Authority(cloudy.graph_url.removesuffix("/v1.0"), cloudy.tenant(0)["id"], "x", "y")
    provider = app_tokens(auth, "s3cret", ["127.0.0.1"])
    with pytest.raises(TokenError) as caught:
        await provider.token()
    assert caught.value.error == "invalid_response"


async def test_an_untrusted_ca_is_refused(cloudy: Cloudy) -> None:
    auth = cloudy.authority_for(0)
    untrusted = Authority(auth.host, auth.tenant_id, auth.client_id, auth.graph_resource)
    provider = app_tokens(untrusted, "s3cret", ["127.0.0.1"])
    with pytest.raises(OSError):  # requests' SSLError: the system CAs do not know the test CA
        await provider.token()
    assert cloudy.token_requests() == []


async def test_a_wrong_secret_and_a_wrong_tenant_are_refused(cloudy: Cloudy) -> None:
    auth = cloudy.authority_for(0)
    with pytest.raises(TokenError) as caught:
        await app_tokens(auth, "guess", ["127.0.0.1"]).token()
    assert caught.value.error == "invalid_client" and "AADSTS7000215" in caught.value.description
    # Contoso's app asking in Fabrikam's tenant: not registered there.
    other = Authority(auth.host, cloudy.tenant(1)["id"], auth.client_id, USGOV_GRAPH, auth.ca_file)
    with pytest.raises(TokenError) as caught:
        await app_tokens(other, "s3cret", ["127.0.0.1"]).token()
    assert caught.value.error == "unauthorized_client"


async def test_a_national_cloud_tenant_cannot_get_a_global_graph_token(cloudy: Cloudy) -> None:
    provider = _app_provider(cloudy, 1)  # Fabrikam (usgov) asking for graph.microsoft.com
    with pytest.raises(TokenError) as caught:
        await provider.token()
    assert caught.value.error == "invalid_resource"
    assert "AADSTS500011" in caught.value.description


async def test_graph_refuses_a_token_for_another_audience(cloudy: Cloudy) -> None:
    """A token for the US Government Graph presented to a global tenant's Graph: 401."""
    app = cloudy.services.state.apps[cloudy.tenant(0)["apps"][0]["clientId"]]
    grant = cloudy.services.identity.mint_access_token(
        app, None, frozenset(app.application_permissions), audience=USGOV_GRAPH
    )
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {grant.token}"}
        async with http.get(cloudy.graph_url + "/users", headers=headers) as response:
            body = await response.json()
    assert response.status == 401 and body["error"]["message"] == "Invalid audience."


async def test_a_certificate_the_app_does_not_have_is_refused(cloudy: Cloudy) -> None:
    stranger = cloudy.tmp / "stranger.pem"
    app_certificate(stranger)
    provider = app_tokens(cloudy.authority_for(0), certificate_credential(str(stranger)), ["x"])
    with pytest.raises(TokenError) as caught:
        await provider.token()
    assert caught.value.error == "invalid_client" and "AADSTS700027" in caught.value.description
    assert "key was not found" in caught.value.description


async def test_an_expired_certificate_is_refused(cloudy: Cloudy) -> None:
    expired = cloudy.tmp / "expired.pem"
    pem = app_certificate(expired, expired=True)
    app = cloudy.services.state.apps[cloudy.tenant(0)["apps"][0]["clientId"]]
    app.certificates.append(pem)
    provider = app_tokens(cloudy.authority_for(0), certificate_credential(str(expired)), ["x"])
    with pytest.raises(TokenError) as caught:
        await provider.token()
    assert "AADSTS700027" in caught.value.description and "expired" in caught.value.description


async def test_a_forged_assertion_is_refused(cloudy: Cloudy) -> None:
    """The registered certificate's thumbprint on a JWT signed by another key."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    registered = certificate_credential(str(cloudy.cert_file))
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(registered["public_certificate"].encode())
    import base64

    thumb = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).decode().rstrip("=")
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tenant, client_id = cloudy.tenant(0)["id"], cloudy.tenant(0)["apps"][0]["clientId"]
    url = f"{cloudy.authority}/{tenant}/oauth2/v2.0/token"
    import time

    now = int(time.time())
    claims = {"aud": url, "iss": client_id, "sub": client_id, "jti": "1", "nbf": now,
              "exp": now + 600}  # fmt: skip
    assertion = jwt.encode(claims, forger, algorithm="PS256", headers={"x5t#S256": thumb})
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "scope": "https://graph.microsoft.com/.default",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    import ssl

    context = ssl.create_default_context(cafile=cloudy.ca_file)
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=form, ssl=context) as response,
    ):
        body = await response.json()
    assert response.status == 401 and body["error"] == "invalid_client"
    assert body["error_codes"] == [700027]


async def test_an_identity_platform_answering_garbage_is_a_clear_error(tmp_path: Path) -> None:
    ca = TestCA.create()
    garbage = web.Application()

    async def nonsense(request: web.Request) -> web.Response:
        return web.Response(text="<html>proxy error</html>", content_type="text/html")

    garbage.router.add_route("*", "/{tail:.*}", nonsense)
    runner, _, secure = await serve_https_too(garbage, ca.server_context(tmp_path))
    try:
        auth = Authority(secure, "00000000-0000-0000-0000-000000000001", "c", USGOV_GRAPH,
                         str(ca.write_bundle(tmp_path / "ca.pem")))  # fmt: skip
        with pytest.raises(TokenError) as caught:
            await app_tokens(auth, "s3cret", ["x"]).token()
        assert caught.value.error == "invalid_response" and caught.value.status == 502
        user = UserTokens(auth, SCOPES)
        with pytest.raises(TokenError):
            await MsalTokenProvider(user.silent, ["x"]).token()
    finally:
        await runner.cleanup()


async def test_a_401_gets_one_fresh_token_and_a_second_401_is_an_error(cloudy: Cloudy) -> None:
    provider = _app_provider(cloudy)
    graph = cloudy.client(provider)
    assert (await graph.users.get()) is not None
    tokens_before = len(cloudy.token_requests())
    # Graph refuses the (still unexpired) token once, as after a revocation.
    cloudy.services.wire.add_fault("/v1.0/users", status=401, count=1, method="GET",
                                   code="InvalidAuthenticationToken")  # fmt: skip
    users = await graph.users.get()
    assert users is not None and users.value
    assert len(cloudy.token_requests()) == tokens_before + 1  # one fresh token, not from cache
    # Refused twice: a fresh token does not help, and the caller hears the 401.
    cloudy.services.wire.add_fault("/v1.0/users", status=401, count=2, method="GET",
                                   code="InvalidAuthenticationToken")  # fmt: skip
    with pytest.raises(APIError) as caught:
        await graph.users.get()
    assert caught.value.response_status_code == 401
    gets = [r for r in cloudy.services.wire.requests if r["path"] == "/v1.0/users"]
    assert len(gets) == 1 + 2 + 2  # no third attempt


# --- what works -----------------------------------------------------------------------------


async def test_an_app_token_by_secret_reads_graph(cloudy: Cloudy) -> None:
    provider = _app_provider(cloudy)
    users = await cloudy.client(provider).users.get()
    assert users is not None and [u.display_name for u in users.value or []] == ["Adele Vance"]
    # One token request for many calls: MSAL's cache and the provider's.
    await cloudy.client(provider).users.get()
    assert len(cloudy.token_requests()) == 1


async def test_a_certificate_credential_works(cloudy: Cloudy) -> None:
    credential = certificate_credential(str(cloudy.cert_file))
    provider = app_tokens(cloudy.authority_for(0), credential, ["127.0.0.1"])
    users = await cloudy.client(provider).users.get()
    assert users is not None and users.value
    body = cloudy.token_requests()[-1]["body"]
    assert "client_assertion=" in body and "client_secret" not in body


async def test_a_national_cloud_tenant_gets_tokens_for_its_own_graph(cloudy: Cloudy) -> None:
    provider = _app_provider(cloudy, 1, resource=USGOV_GRAPH)
    users = await cloudy.client(provider).users.get()
    assert users is not None and [u.display_name for u in users.value or []] == ["Grady Archie"]
    token = await provider.token()
    grant = cloudy.services.state.tokens[token]
    assert grant.audience == USGOV_GRAPH
    assert (
        "scope=https%3A%2F%2Fgraph.microsoft.us%2F.default" in cloudy.token_requests()[-1]["body"]
    )


async def test_a_device_code_sign_in_kept_as_a_token_cache(cloudy: Cloudy) -> None:
    auth = cloudy.authority_for(1, resource=USGOV_GRAPH)
    user = UserTokens(auth, SCOPES)
    flow = await asyncio.to_thread(user.start_device_flow)
    pending = await asyncio.to_thread(user.poll_device_flow, flow)
    assert pending.get("error") == "authorization_pending"
    grady = cloudy.services.state.find_user("grady.archie@fabrikam.onmicrosoft.com")
    assert grady is not None
    cloudy.services.identity.approve_device_code(flow["user_code"], grady)
    result = raise_for(await asyncio.to_thread(user.poll_device_flow, flow))
    assert signed_in_as(result) == "grady.archie@fabrikam.onmicrosoft.com"
    cache = user.serialize()
    assert json.loads(cache)["RefreshToken"]  # what is kept (sealed) at rest
    # After a restart: only the cache, and the token renews from its refresh token.
    saved: list[str] = []

    async def save(blob: str) -> None:
        saved.append(blob)

    again = UserTokens(auth, SCOPES, cache)
    provider = again.provider(["127.0.0.1"], save)
    me = await cloudy.client(provider).me.get()
    assert me is not None and me.display_name == "Grady Archie"
    first = await provider.token()
    forced = await provider.token(force=True)
    assert forced != first and saved  # rotated refresh token handed over to be stored
    assert cloudy.services.state.tokens[forced].audience == USGOV_GRAPH


async def test_a_cache_without_an_account_asks_for_a_new_sign_in(cloudy: Cloudy) -> None:
    provider = UserTokens(cloudy.authority_for(0), SCOPES, "{}").provider(["x"], _ignore)
    with pytest.raises(TokenError) as caught:
        await provider.token()
    assert caught.value.error == "interaction_required"


async def _ignore(blob: str) -> None:
    return None
