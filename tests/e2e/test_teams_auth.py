"""The Teams connector's sign-in through MSAL against the Graph emulator: a 401 from Graph on
the running bridge, a certificate credential, and a national-cloud tenant's own Graph audience
(``pontis check`` as an operator runs it). Hostile cases first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.teams.connector import TeamsConnector
from tests.e2e.conftest import Hub
from tests.e2e.graph import RELAY_UPN
from tests.teams_emulator.tls import app_certificate

pytestmark = pytest.mark.e2e

USGOV_GRAPH = "https://graph.microsoft.us"


def _body(event: dict[str, Any]) -> str:
    return str(event.get("content", {}).get("body", ""))


async def test_a_token_graph_refuses_is_replaced_once_and_the_answer_comes(hub: Hub) -> None:
    """Graph answers 401 to the bridge's (unexpired) app token, as after a revocation: the
    bridge gets one fresh token and the Matrix user's search still gets its answer."""
    carol = await hub.user("carol-auth")
    room = await carol.create_room(invite=[hub.bot], is_direct=True)
    await carol.wait_for(lambda e: "Pontis bridge bot" in _body(e), room_id=room)
    tokens_before = len(hub.graph.requests("/*/oauth2/v2.0/token"))
    hub.graph.services.wire.add_fault(
        "/v1.0/users", status=401, count=1, method="GET", code="InvalidAuthenticationToken"
    )
    mark = carol.mark()
    await carol.send_text(room, "search teams meg")
    reply = await carol.wait_for(
        lambda e: e["sender"] == hub.bot and "Found" in _body(e), room_id=room, after=mark
    )
    assert "Megan Bowen" in _body(reply)
    searches = hub.graph.requests("/v1.0/users", "GET")
    assert [r["status"] for r in searches[-2:]] == [401, 200]
    assert len(hub.graph.requests("/*/oauth2/v2.0/token")) == tokens_before + 1


async def test_check_refuses_an_expired_or_unknown_certificate(hub: Hub, tmp_path: Path) -> None:
    expired = tmp_path / "expired.pem"
    app_certificate(expired, expired=True)
    section = hub.graph.teams_section("https://bridge.example.org")
    del section["tenants"][0]["client_secret"]
    section["tenants"][0]["certificate_file"] = str(expired)
    (problem,) = await TeamsConnector().check(section)
    assert "certificate_file: the certificate expired on" in problem
    stranger = tmp_path / "stranger.pem"
    app_certificate(stranger)  # valid, but not uploaded to the app registration
    section["tenants"][0]["certificate_file"] = str(stranger)
    (problem,) = await TeamsConnector().check(section)
    assert "the certificate is not the app's or has expired" in problem
    assert "PRIVATE KEY" not in problem


async def test_check_with_a_certificate_credential(hub: Hub, tmp_path: Path) -> None:
    cert_file = tmp_path / "bridge.pem"
    pem = app_certificate(cert_file)
    hub.graph.services.state.apps[hub.graph.app["clientId"]].certificates.append(pem)
    section = hub.graph.teams_section("https://bridge.example.org")
    del section["tenants"][0]["client_secret"]
    section["tenants"][0]["certificate_file"] = str(cert_file)
    assert await TeamsConnector().check(section) == []
    body = hub.graph.requests("/*/oauth2/v2.0/token")[-1]["body"]
    assert "client_assertion=" in body and "client_secret" not in body


async def test_a_national_cloud_tenant_gets_tokens_for_its_own_graph(hub: Hub) -> None:
    tenant = await hub.graph.control("POST", "/tenants", {"displayName": "Fabrikam",
                                                          "cloud": "usgov"})  # fmt: skip
    app = await hub.graph.control("POST", f"/tenants/{tenant['id']}/apps", {"displayName": "P"})
    section = hub.graph.teams_section("https://bridge.example.org")
    del section["service_chat"]  # it needs a relay account, which this tenant has not
    entry = {"tenant_id": tenant["id"], "client_id": app["clientId"],
             "client_secret": app["clientSecret"]}  # fmt: skip
    # Configured as if in the global cloud: Entra ID (the emulator) refuses the audience.
    section["tenants"] = [entry]
    (problem,) = await TeamsConnector().check(section)
    assert "the tenant's cloud is wrong" in problem and "AADSTS500011" in problem
    # Its own cloud, reached at the emulator's addresses: a token for graph.microsoft.us.
    section["tenants"] = [entry | {"cloud": "usgov", "authority_host": hub.graph.authority,
                                   "graph_endpoint": hub.graph.graph_url}]  # fmt: skip
    assert await TeamsConnector().check(section) == []
    asked = hub.graph.requests(f"/{tenant['id']}/oauth2/v2.0/token")[-1]["body"]
    assert "scope=https%3A%2F%2Fgraph.microsoft.us%2F.default" in asked
    grants = [g for g in hub.graph.services.state.tokens.values() if g.tenant_id == tenant["id"]]
    assert grants and {g.audience for g in grants} == {USGOV_GRAPH}


async def test_the_relay_signing_in_without_a_pickle_key_is_refused_and_nothing_kept(
    hub: Hub,
) -> None:
    """``login teams`` completed as the relay account on a bridge without a pickle key: its
    refresh token would be stored in the clear, so it is not stored at all, and the operator is
    told why. (The sealed sign-in itself: tests/teams/test_sign_in.py, on both databases.)"""
    dave = await hub.user("dave-auth")
    room = await dave.create_room(invite=[hub.bot], is_direct=True)
    await dave.wait_for(lambda e: "Pontis bridge bot" in _body(e), room_id=room)
    mark = dave.mark()
    await dave.send_text(room, "login teams")
    prompt = await dave.wait_for(lambda e: "enter the code" in _body(e), room_id=room, after=mark)
    code = _body(prompt).split("**")[1]
    relay = hub.graph.services.state.find_user(RELAY_UPN)
    assert relay is not None
    await hub.graph.control("POST", "/devicecodes/approve", {"userCode": code, "user": relay.id})
    mark = dave.mark()
    await dave.send_text(room, "done")
    answer = await dave.wait_for(
        lambda e: e["sender"] == hub.bot and "pickle key" in _body(e), room_id=room, after=mark
    )
    assert "encryption.pickle_key_file" in _body(answer)
    assert hub.bridge.query("SELECT key FROM kv WHERE key LIKE 'relay-sign-in:%'") == []
    assert hub.bridge.query("SELECT login_id FROM login WHERE login_id = ?", relay.id) == []
