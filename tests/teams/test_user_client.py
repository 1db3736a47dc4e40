"""A Matrix user's own Teams login (bridge.teams.client.TeamsUserClient) whose tenant the
operator removed from the config: it must not use its tokens against another tenant."""

from __future__ import annotations

import pytest

from bridge.core import NotSupported
from bridge.portal.models import Login
from bridge.teams.client import TeamsUserClient
from bridge.teams.ids import NETWORK
from tests.teams.test_members import _net
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

GONE = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"


async def test_a_login_of_a_removed_tenant_is_disconnected_and_sends_nothing(
    emulator: Emulator,  # noqa: F811
) -> None:
    net, link = _net(emulator)
    login = Login(network=NETWORK, login_id="u1", user_mxid="@bob:hub.example",
                  remote_name="Bob", metadata={"tenant_id": GONE, "token_cache": "{}"})  # fmt: skip
    client = TeamsUserClient(net, login)
    await client.connect()
    net.ctx.set_client_state.assert_called_once()
    _, kwargs = net.ctx.set_client_state.call_args
    assert kwargs["connected"] is False
    assert f"tenant {GONE} is no longer configured" in kwargs["message"]
    with pytest.raises(NotSupported) as refused:
        await client._acting("19:chat@thread.v2", "Bob")
    assert "no longer configured" in (refused.value.user_message or "")
    with pytest.raises(NotSupported):
        client._chat_opener(link)
    assert await client.search_users("adele", "@bob:hub.example") == []
    await client.logout_remote()
    assert emulator.requests("/*token*") == [] and emulator.requests("/v1.0/*") == []
