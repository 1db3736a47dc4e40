"""The hub reads only what it bridges: the agency's other chats are neither notified nor read.

The bridge subscribes to the chats of the accounts it watches (the relay, each logged-in
Matrix user), so Graph does not tell it about a chat among Teams people only; and a
notification for a chat without a portal that does arrive from another subscription (an older
version's tenant-wide one, with the right clientState) causes no GET of that chat, its
members or its messages. The emulator counts every GET.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from tests.e2e.conftest import Hub
from tests.e2e.hub import eventually
from tests.e2e.test_teams import Teams, _body, teams_login

pytestmark = pytest.mark.e2e
_chats = itertools.count(1)


@pytest_asyncio.fixture(scope="module")
async def adele(hub: Hub) -> AsyncIterator[Teams]:
    user = await hub.user("adele")
    room = await teams_login(hub, user, "adele")
    yield Teams(user, room)


async def _reads_of(hub: Hub, chat: str) -> int:
    """GETs of the chat, its members or its messages, by any path Graph offers."""
    return await hub.graph.reads(f"/v1.0/chats/{chat}*") + await hub.graph.reads(
        f"/v1.0/*/chats/{chat}*"
    )


async def _bridged_marker(hub: Hub, adele: Teams) -> None:
    """A message in a bridged chat, written after the private one, reaches Matrix: the
    bridge has handled every notification before it."""
    chat = await hub.graph.new_chat(f"Marker {next(_chats)}", "adele", "alex", relay=False)
    await hub.graph.post_as("alex", chat, "<p>marker</p>")
    room_id = await adele.user.wait_for_invite(timeout=30)
    await adele.user.join(room_id)
    await adele.user.wait_for(lambda e: _body(e) == "marker", room_id=room_id, timeout=30)


async def test_a_chat_among_teams_people_is_not_notified_nor_read(hub: Hub, adele: Teams) -> None:
    private = await hub.graph.new_chat(f"Private {next(_chats)}", "alex", "nestor", relay=False)
    await hub.graph.post_as("alex", private, "<p>Between Alex and Nestor</p>")
    await _bridged_marker(hub, adele)
    deliveries = [d for d in hub.graph.services.notifier.deliveries if private in str(d.payload)]
    assert deliveries == []
    assert await _reads_of(hub, private) == 0


async def test_a_notification_from_an_unwatched_subscription_reads_nothing(
    hub: Hub, adele: Teams
) -> None:
    """Hostile: a tenant-wide subscription (as an older version made) with the bridge's own
    clientState delivers a real notification for an unbridged chat."""
    client_state = next(
        s.client_state for s in hub.graph.services.state.live_subscriptions() if s.client_state
    )
    wide = await hub.graph.graph_as_app(
        "POST",
        "/subscriptions",
        {
            "changeType": "created,updated,deleted",
            "notificationUrl": f"http://127.0.0.1:{hub.as_port}/_pontis/teams/notifications",
            "lifecycleNotificationUrl": f"http://127.0.0.1:{hub.as_port}/_pontis/teams/lifecycle",
            "resource": "/chats/getAllMessages",
            "expirationDateTime": (datetime.now(UTC) + timedelta(minutes=30)).isoformat(),
            "clientState": client_state,
        },
    )
    try:
        private = await hub.graph.new_chat(f"Private {next(_chats)}", "alex", "nestor", relay=False)
        await hub.graph.post_as("alex", private, "<p>Still between Alex and Nestor</p>")

        def acknowledged() -> bool:
            return any(
                d.subscription_id == wide["id"]
                and private in str(d.payload)
                and d.state == "delivered"
                for d in hub.graph.services.notifier.deliveries
            )

        await eventually(acknowledged, "the bridge to acknowledge the tenant-wide notification")
        await _bridged_marker(hub, adele)
        await asyncio.sleep(0.5)
        assert await _reads_of(hub, private) == 0
    finally:
        await hub.graph.graph_as_app("DELETE", f"/subscriptions/{wide['id']}")
