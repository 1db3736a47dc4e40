"""A channel's catch-up inputs (bridge.teams.channel_inbound): each gap Graph reports gets its
own catch-up, even while an earlier one is still queued, and a catch-up Graph refuses is not
swallowed: it reaches the core, which parks it and tells the room."""

from __future__ import annotations

import logging
import types
from typing import Any
from unittest.mock import MagicMock

import pytest

from bridge.core import NotFound, PermanentError, PortalKey, RemoteChatID, RemoteRedaction
from bridge.portal.models import RemoteInput
from bridge.teams.channel_inbound import CATCH_UP, TOKEN, ChannelInbound
from bridge.teams.ids import NETWORK

PORTAL = "channel:7c1f0000-0000-0000-0000-000000000001:19:abc@thread.tacv2"


class _Ctx:
    def __init__(self) -> None:
        self.accepted: list[RemoteInput] = []
        self.log = logging.getLogger("test.channel_inbound")
        self.http = None
        self.store = self

    async def accept_remote(self, item: RemoteInput) -> bool:
        if any(i.dedupe_id == item.dedupe_id for i in self.accepted):
            return False  # what the inbox does with a pending row of the same id
        self.accepted.append(item)
        return True

    async def get_portal(self, remote_id: str) -> Any:
        return types.SimpleNamespace(mxid="!room:hub")

    async def kv_get(self, key: str) -> str | None:
        return None

    async def kv_set(self, key: str, value: str) -> None:
        pass


def _inbound(ctx: _Ctx, failure: Exception | None = None) -> ChannelInbound:
    async def tenant_for_chat(portal_id: str) -> Any:
        return types.SimpleNamespace(
            id="t", graph_url="https://graph.example/v1.0", app=MagicMock()
        )  # builders the fake run never calls

    net = types.SimpleNamespace(
        ctx=ctx,
        cfg=types.SimpleNamespace(max_file_mb=1, catch_up_messages=50),
        tenant_for_chat=tenant_for_chat,
    )
    subs = types.SimpleNamespace(missed=None)
    inbound = ChannelInbound(net, subs, None, None)  # type: ignore[arg-type]

    async def run(*args: Any) -> list[Any]:
        if failure is not None:
            raise failure
        return []

    inbound._catching_up = types.SimpleNamespace(run=run)  # type: ignore[assignment]
    return inbound


def _item() -> RemoteInput:
    key = PortalKey(NETWORK, RemoteChatID(PORTAL))
    return RemoteInput(key, CATCH_UP, {TOKEN: "t1"}, dedupe_id=CATCH_UP)


async def test_a_second_gap_while_a_catch_up_is_queued_is_not_dropped() -> None:
    ctx = _Ctx()
    inbound = _inbound(ctx)
    await inbound.catch_up(PORTAL)
    await inbound.catch_up(PORTAL)
    assert len(ctx.accepted) == 2
    assert all(str(i.dedupe_id).startswith(f"{CATCH_UP}:") for i in ctx.accepted)


@pytest.mark.parametrize(
    "failure",
    [PermanentError("channel deleted"), NotFound("gone"), RuntimeError("bug")],
)
async def test_a_failed_catch_up_reaches_the_core(failure: Exception) -> None:
    """Not a silent ``[]``: the core's inbox retries or parks it and posts a room notice."""
    inbound = _inbound(_Ctx(), failure)
    with pytest.raises(type(failure)):
        await inbound.convert(_item())


def _deleted(msg_id: str) -> RemoteInput:
    team, channel = PORTAL.split(":", 2)[1], PORTAL.split(":", 2)[2]
    resource = f"teams('{team}')/channels('{channel}')/messages('{msg_id}')"
    payload = {"resource": resource, "changeType": "deleted", TOKEN: "t1"}
    return RemoteInput(PortalKey(NETWORK, RemoteChatID(PORTAL)), "notification", payload)


def _bridged_message(inbound: ChannelInbound, ctx: _Ctx, graph_has: Any) -> None:
    stored = types.SimpleNamespace(sender_id="0a1b2c3d-0000-0000-0000-00000000a1e7")

    async def get_message(portal_id: str, msg_id: str) -> Any:
        return stored

    async def fetch(*args: Any) -> Any:
        return graph_has

    async def changes(*args: Any) -> list[Any]:
        return []

    ctx.get_message = get_message  # type: ignore[attr-defined]
    inbound.net.sent = set()  # type: ignore[misc]
    inbound._fetch = fetch  # type: ignore[method-assign]
    inbound._changes = changes  # type: ignore[method-assign]


async def test_a_deleted_notification_graph_does_not_confirm_redacts_nothing() -> None:
    """Hostile: a replayed or forged ``changeType: deleted`` for a message Graph still has,
    not deleted: the room's copy stays."""
    from msgraph.generated.models.chat_message import ChatMessage
    from msgraph.generated.models.chat_message_from_identity_set import (
        ChatMessageFromIdentitySet,
    )
    from msgraph.generated.models.identity import Identity
    from msgraph.generated.models.item_body import ItemBody

    alive = ChatMessage(
        id="1700000000001",
        from_=ChatMessageFromIdentitySet(user=Identity(id="u1", display_name="Alex")),
        body=ItemBody(content="still here"),
    )
    ctx = _Ctx()
    inbound = _inbound(ctx)
    _bridged_message(inbound, ctx, alive)
    events = await inbound.convert(_deleted("1700000000001"))
    assert not any(isinstance(e, RemoteRedaction) for e in events)


async def test_a_deleted_notification_of_a_message_graph_lost_redacts_it() -> None:
    ctx = _Ctx()
    inbound = _inbound(ctx)
    _bridged_message(inbound, ctx, None)  # Graph: 404
    events = await inbound.convert(_deleted("1700000000001"))
    assert [type(e) for e in events] == [RemoteRedaction]
