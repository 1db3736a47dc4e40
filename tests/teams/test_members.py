"""Adding a Teams person to a bridged chat from Matrix (bridge.teams.members), against the
Graph emulator through the unmodified msgraph-sdk. Megan Bowen plays the relay account."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest
from kiota_abstractions.api_error import APIError
from msgraph.generated.models.aad_user_conversation_member import AadUserConversationMember

from bridge.core import BridgeError, NotFound, RemoteUserID
from bridge.core.federation import FederationPolicy
from bridge.teams.config import TeamsConfig
from bridge.teams.members import add_member
from bridge.teams.network import TeamsNetwork
from bridge.teams.tenant import TenantLink
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

INVITER = "@anna:hub.example"


def _net(emu: Emulator, policy: FederationPolicy | None = None) -> tuple[TeamsNetwork, Any]:
    megan = emu.user("megan")
    section = {
        "tenants": [
            {
                "tenant_id": emu.tenant_id,
                "client_id": emu.app["clientId"],
                "client_secret": emu.app["clientSecret"],
                "relay_username": megan["userPrincipalName"],
                "relay_password": "megan-pw",
            }
        ],
        "graph_url": emu.graph_url,
        "authority": emu.authority,
        "ca_file": emu.ca_file,
        "webhook": {"public_url": "http://127.0.0.1:1"},
    }
    cfg = TeamsConfig.from_section(section)
    ctx = MagicMock()
    ctx.log = logging.getLogger("test.teams.members")
    ctx.store.kv_get = AsyncMock(return_value=None)
    ctx.store.kv_set = AsyncMock()
    ctx.store.sealed_get = AsyncMock(return_value=None)  # no stored relay sign-in
    ctx.store.sealed_set = AsyncMock()
    ctx.federation = policy or FederationPolicy(None, "hub.example")
    link = TenantLink(cfg, cfg.tenants[0], emu.session, ctx.store, ctx.log)
    emu._http.extend(link._httpx)
    return TeamsNetwork(ctx, cfg, [link]), link


async def _group(emu: Emulator, *names: str) -> str:
    members = [emu.user(n)["id"] for n in names]
    chat = await emu.control("POST", "/chats", {"chatType": "group", "members": members})
    return str(chat["id"])


def _posts(emu: Emulator) -> list[dict[str, Any]]:
    return emu.requests("/v1.0/chats/*/members", "POST")


async def test_the_relay_adds_a_colleague_to_a_group_chat(emulator: Emulator) -> None:  # noqa: F811
    net, link = _net(emulator)
    chat = await _group(emulator, "adele", "megan")
    alex = emulator.user("alex")["id"]
    await add_member(net, link.relay, chat, RemoteUserID(alex), INVITER, delegated=True)
    assert alex in emulator.services.state.chats[chat].members
    assert len(_posts(emulator)) == 1
    members = await link.app.chats.by_chat_id(chat).members.get()
    assert alex in {getattr(m, "user_id", None) for m in members.value}


async def test_the_member_is_bound_on_the_tenants_own_graph(emulator: Emulator) -> None:  # noqa: F811
    """A national-cloud tenant: the bind names its Graph, not the section's global one."""
    net, link = _net(emulator)
    net.cfg = dataclasses.replace(net.cfg, graph_url="https://graph.global.invalid/v1.0")
    chat = await _group(emulator, "adele", "megan")
    alex = emulator.user("alex")["id"]
    await add_member(net, link.relay, chat, RemoteUserID(alex), INVITER, delegated=True)
    [post] = _posts(emulator)
    bind = json.loads(post["body"])["user@odata.bind"]
    assert bind == f"{link.graph_url}/users('{alex}')" and "global.invalid" not in bind


async def test_a_one_on_one_chat_is_not_widened_in_place(emulator: Emulator) -> None:  # noqa: F811
    """Teams keeps a one-on-one chat's two people: nothing is posted, and the caller makes a
    group chat instead (bridge.teams.group_chats)."""
    net, link = _net(emulator)
    alex = emulator.user("alex")["id"]
    added = await add_member(
        net, link.relay, emulator.chat(1), RemoteUserID(alex), INVITER, delegated=True
    )
    assert added is False
    assert _posts(emulator) == []


async def test_an_unknown_person_is_not_found(emulator: Emulator) -> None:  # noqa: F811
    net, link = _net(emulator)
    chat = await _group(emulator, "adele", "megan")
    nobody = RemoteUserID("00000000-0000-4000-8000-000000000099")
    with pytest.raises(NotFound):
        await add_member(net, link.relay, chat, nobody, INVITER, delegated=True)
    assert _posts(emulator) == []


async def test_an_inviter_the_policy_refuses_changes_nothing(emulator: Emulator) -> None:  # noqa: F811
    policy = FederationPolicy(
        [{"network": "teams", "remote": ["another-tenant"], "matrix": ["*"]}], "hub.example"
    )
    net, link = _net(emulator, policy)
    chat = await _group(emulator, "adele", "megan")
    alex = emulator.user("alex")["id"]
    with pytest.raises(BridgeError) as refused:
        await add_member(net, link.relay, chat, RemoteUserID(alex), INVITER, delegated=True)
    assert "federation policy" in refused.value.user_message
    assert alex not in emulator.services.state.chats[chat].members


# --- the emulator's "Add member to a chat" --------------------------------------------------


def _member(emu: Emulator, person: str) -> AadUserConversationMember:
    return AadUserConversationMember(
        odata_type="#microsoft.graph.aadUserConversationMember",
        roles=["owner"],
        additional_data={"user@odata.bind": f"{emu.graph_url}/users('{person}')"},
    )


async def test_the_emulator_refuses_a_non_member_and_a_one_on_one_chat(
    emulator: Emulator,  # noqa: F811
) -> None:
    chat = await _group(emulator, "adele", "megan")
    alex = emulator.user("alex")
    with pytest.raises(APIError) as outsider:
        await (
            emulator.user_client("alex")
            .chats.by_chat_id(chat)
            .members.post(_member(emulator, alex["id"]))
        )
    assert outsider.value.response_status_code == 403
    with pytest.raises(APIError) as direct:
        await (
            emulator.user_client("adele")
            .chats.by_chat_id(emulator.chat(1))
            .members.post(_member(emulator, alex["id"]))
        )
    assert direct.value.response_status_code == 400
    added = (
        await emulator.user_client("adele")
        .chats.by_chat_id(chat)
        .members.post(_member(emulator, alex["userPrincipalName"]))
    )
    assert added is not None and getattr(added, "user_id", None) == alex["id"]
