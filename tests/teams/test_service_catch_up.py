"""Service-chat requests written while no notification could bring them
(bridge.teams.service_catch_up), against the Graph emulator: read once the relay account's
subscription is in place, answered once, and nothing else of the tenant is read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest.mock import AsyncMock, MagicMock

from bridge.core import RemoteChatID
from bridge.portal.models import Portal
from bridge.teams.ids import NETWORK, portal_key
from bridge.teams.service_catch_up import LOOKBACK, ServiceCatchUp, catch_up_tenant
from bridge.teams.tenant import TenantLink
from tests.teams.test_service_chat import ANNA, Hub, _hub
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)


def _link(hub: Hub) -> TenantLink:
    return next(iter(hub.service.net.tenants.values()))


async def test_a_request_written_unnotified_is_queued_and_answered_once(
    emulator: Emulator,  # noqa: F811
) -> None:
    hub = await _hub(emulator)
    msg = await hub.write(ANNA)  # no notification reaches the bridge
    assert await catch_up_tenant(hub.service.net, _link(hub)) == 1
    [item] = [c.args[0] for c in hub.ctx.accept_remote.await_args_list]
    assert item.portal == portal_key(hub.service_chat)
    assert item.payload["resource"] == f"chats('{hub.service_chat}')/messages('{msg}')"
    await hub.service.convert(item)
    assert len(hub.group_chats()) == 1 and len(await hub.answers()) == 1
    # The next start finds it answered: nothing is queued again.
    hub.ctx.accept_remote.reset_mock()
    assert await catch_up_tenant(hub.service.net, _link(hub)) == 0
    assert [c.args[0].kind for c in hub.ctx.accept_remote.await_args_list] == []


async def test_an_old_request_is_left(emulator: Emulator) -> None:  # noqa: F811
    hub = await _hub(emulator)
    await hub.write(ANNA)
    later = datetime.now(UTC) + LOOKBACK + timedelta(hours=1)
    assert await catch_up_tenant(hub.service.net, _link(hub), now=later) == 0
    hub.ctx.accept_remote.assert_not_awaited()


async def test_only_the_relays_unbridged_one_on_one_chats_are_read(
    emulator: Emulator,  # noqa: F811
) -> None:
    hub = await _hub(emulator)
    await hub.write(ANNA, chat=hub.emu.chat(0))  # the group chat "Launch", without the relay
    portal = Portal(NETWORK, RemoteChatID(hub.service_chat), mxid="!room:hub.example")
    hub.ctx.store.get_portal = AsyncMock(return_value=portal)  # bridged from Matrix earlier
    await hub.write(ANNA)
    assert await catch_up_tenant(hub.service.net, _link(hub)) == 0
    assert hub.emu.requests("/v1.0/chats/*/messages*", "GET") == []


async def test_the_catch_up_starts_once_the_subscription_is_first_in_place(
    emulator: Emulator,  # noqa: F811
) -> None:
    hub = await _hub(emulator)
    inner = AsyncMock()
    hub.ctx.background = MagicMock(side_effect=lambda coro, name: coro.close())
    catch_up = ServiceCatchUp(hub.service.net, True, inner)
    tenant = _link(hub).id
    await catch_up.subscription_state(tenant, False)
    hub.ctx.background.assert_not_called()
    await catch_up.subscription_state(tenant, True)
    await catch_up.subscription_state(tenant, True)  # a renewal: not again
    assert hub.ctx.background.call_count == 1
    calls = [c.args for c in inner.await_args_list]
    assert calls == [(tenant, False), (tenant, True), (tenant, True)]  # always passed on
    disabled = ServiceCatchUp(hub.service.net, False, inner)
    await disabled.subscription_state(tenant, True)
    assert hub.ctx.background.call_count == 1
