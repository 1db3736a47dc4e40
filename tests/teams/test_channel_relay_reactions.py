"""Reactions of Matrix users without a Teams login in a team channel, against the Graph
emulator through the unmodified msgraph-sdk: the relay account (Megan Bowen here) shows one as
a short reply in the thread of the message reacted to, and deletes that reply when the
reaction is taken back. Graph gets no reaction of the relay's own."""

from __future__ import annotations

from unittest.mock import AsyncMock

from bridge.core import RemoteChatID, RemoteMessageID
from bridge.portal.models import Message
from bridge.teams.ids import NETWORK, channel_key
from bridge.teams.relay_reactions import is_relay_post
from tests.teams.test_relay_posts import _client
from tests.teams.test_relay_reactions import EVE, ROOM, _reaction, _removal
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)


async def test_a_reaction_on_a_thread_reply_is_a_reply_in_that_thread(
    emulator: Emulator,  # noqa: F811
) -> None:
    client = _client(emulator)
    kv: dict[str, str] = {}
    store = client.net.ctx.store
    store.kv_get = AsyncMock(side_effect=kv.get)
    store.kv_set = AsyncMock(side_effect=kv.__setitem__)
    store.kv_delete = AsyncMock(side_effect=lambda key: kv.pop(key, None))
    store.get_message = AsyncMock(return_value=None)
    members = [emulator.user(n)["id"] for n in ("adele", "megan")]
    team = await emulator.control("POST", "/teams", {"displayName": "Ops", "members": members})
    team_id, channel_id = team["id"], team["channels"][0]["id"]
    path = f"/teams/{team_id}/channels/{channel_id}/messages"
    adele = emulator.user("adele")["id"]
    root = await emulator.control("POST", path, {"from": adele, "content": "<p>Plan</p>"})
    reply = await emulator.control(
        "POST", path, {"from": adele, "content": "<p>Step one</p>", "replyToId": root["id"]}
    )
    portal = channel_key(team_id, channel_id).remote_id
    target = Message(network=NETWORK, portal_id=RemoteChatID(portal), remote_id=reply["id"],
                     mxid="$target", room_id=ROOM, sender_id=adele,
                     thread_root_id=RemoteMessageID(root["id"]))  # fmt: skip
    reaction = _reaction(target)
    await client.handle_matrix_reaction(reaction)

    channel = emulator.services.state.channel(team_id, channel_id)
    thread = channel.messages[root["id"]]
    [shown] = [m for m in thread.replies.values() if "reacted" in m.content]
    assert EVE in shown.content and "Step one" in shown.content
    assert thread.replies[reply["id"]].reactions == []  # nobody's reaction made up
    assert await is_relay_post(store, portal, shown.id)
    await client.handle_matrix_reaction(reaction)  # offered again after a crash: once
    assert len([m for m in thread.replies.values() if "reacted" in m.content]) == 1
    await client.handle_matrix_reaction_remove(_removal(reaction))
    assert shown.deleted is not None
