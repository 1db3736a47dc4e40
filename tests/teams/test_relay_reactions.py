"""Reactions of Matrix users without a Teams login (bridge.teams.relay_reactions), against the
Graph emulator through the unmodified msgraph-sdk: Graph cannot react on someone's behalf, so
the relay account posts a marked message that quotes the message reacted to, and deletes it
when the reaction is taken back. Megan Bowen plays the relay account."""

from __future__ import annotations

from unittest.mock import AsyncMock

import pytest

from bridge.core import MatrixReaction, MatrixReactionRemove, NotSupported, RemoteChatID
from bridge.portal.models import Message, Portal, Reaction
from bridge.teams.client import TeamsSharedClient
from bridge.teams.from_matrix import EXTERNAL
from bridge.teams.ids import NETWORK
from bridge.teams.relay_reactions import (
    PER_SENDER,
    PER_WINDOW,
    WINDOW,
    RelayReactions,
    is_relay_post,
)
from tests.teams.test_members import _group
from tests.teams.test_relay_posts import _client, _posted
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

EVE = "@eve:evil.example"
ROOM = "!room:hub.example"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _setup(emu: Emulator, clock: Clock | None = None) -> tuple[TeamsSharedClient, Message]:
    """The shared client with a working key-value store, and Adele's message in a chat of
    Adele and the relay account."""
    client = _client(emu)
    kv: dict[str, str] = {}
    store = client.net.ctx.store
    store.kv_get = AsyncMock(side_effect=kv.get)
    store.kv_set = AsyncMock(side_effect=kv.__setitem__)
    store.kv_delete = AsyncMock(side_effect=lambda key: kv.pop(key, None))
    if clock is not None:
        client._reactions = RelayReactions(client.net, clock)
    chat = await _group(emu, "adele", "megan")
    posted = await emu.post_as("adele", chat, "<p>Quarterly <b>numbers</b> are in</p>")
    target = Message(network=NETWORK, portal_id=RemoteChatID(chat), remote_id=posted["id"],
                     mxid="$target", room_id=ROOM, sender_id=emu.user("adele")["id"])  # fmt: skip
    return client, target


def _reaction(target: Message, emoji: str = "👍", event_id: str = "$r1",
              sender: str = EVE) -> MatrixReaction:  # fmt: skip
    portal = Portal(NETWORK, target.portal_id, mxid=ROOM)
    return MatrixReaction(portal=portal, event_id=event_id, sender=sender, sender_name="Eve",
                          timestamp=0, target=target, emoji=emoji)  # fmt: skip


def _removal(reaction: MatrixReaction) -> MatrixReactionRemove:
    stored = Reaction(network=NETWORK, portal_id=reaction.target.portal_id,
                      message_id=reaction.target.remote_id, sender_id=EVE,
                      emoji=reaction.emoji, mxid=reaction.event_id, room_id=ROOM)  # fmt: skip
    return MatrixReactionRemove(portal=reaction.portal, event_id="$redaction", sender=EVE,
                                sender_name="Eve", timestamp=0, target=stored)  # fmt: skip


async def test_a_reaction_is_a_marked_reply_from_the_relay_and_goes_when_taken_back(
    emulator: Emulator,  # noqa: F811
) -> None:
    client, target = await _setup(emulator)
    reaction = _reaction(target)
    await client.handle_matrix_reaction(reaction)
    [post] = _posted(emulator)
    header = f"<p><b>{EXTERNAL}</b> · <b>{EVE}</b> · “Eve”</p>"
    assert post["body"]["content"].endswith(
        header + "<p>reacted 👍 to: “Quarterly numbers are in”</p>"
    )
    [quote] = post["attachments"]
    assert quote["contentType"] == "messageReference" and quote["id"] == target.remote_id
    # Graph has no reaction of the relay's: nobody's reaction was made up.
    state = emulator.services.state.chats[target.portal_id]
    assert state.messages[target.remote_id].reactions == []
    [shown] = [m for m in state.messages.values() if "reacted" in m.content]
    assert await is_relay_post(client.net.ctx.store, target.portal_id, shown.id)
    # Offered again (the bridge died before the core stored it): not posted twice.
    await client.handle_matrix_reaction(reaction)
    assert len(_posted(emulator)) == 1
    # Taken back in Matrix: the message goes, once.
    await client.handle_matrix_reaction_remove(_removal(reaction))
    assert shown.deleted is not None
    await client.handle_matrix_reaction_remove(_removal(reaction))
    assert len(emulator.requests("/v1.0/chats/*/messages/*/softDelete", "POST")) == 1


async def test_a_hostile_key_is_shown_as_short_escaped_text(emulator: Emulator) -> None:  # noqa: F811
    client, target = await _setup(emulator)
    key = '<img src=x onerror="alert(1)">' * 20 + "\u202e\n"
    await client.handle_matrix_reaction(_reaction(target, key))
    [post] = _posted(emulator)
    line = post["body"]["content"].rsplit("<p>", 1)[1]
    assert "<img" not in post["body"]["content"] and "&lt;img" in line
    assert len(line) < 200 and "\u202e" not in line and "\n" not in line


async def test_a_reaction_flood_is_cut_and_its_sender_told_once(emulator: Emulator) -> None:  # noqa: F811
    clock = Clock()
    client, target = await _setup(emulator, clock)
    for n in range(PER_WINDOW):  # several people: the chat's share
        await client.handle_matrix_reaction(_reaction(target, str(n), f"$ok{n}", f"@u{n}:x.y"))
    with pytest.raises(NotSupported) as refused:
        await client.handle_matrix_reaction(_reaction(target, "x", "$flood1", "@late:x.y"))
    assert "login teams" in (refused.value.user_message or "")
    for n in range(10):  # the rest of the minute: dropped without a notice each
        await client.handle_matrix_reaction(_reaction(target, "y", f"$flood{n + 2}", "@late:x.y"))
    assert len(_posted(emulator)) == PER_WINDOW
    clock.now += WINDOW
    await client.handle_matrix_reaction(_reaction(target, "later", "$later"))
    assert len(_posted(emulator)) == PER_WINDOW + 1


async def test_one_user_cannot_use_up_a_chats_reactions(emulator: Emulator) -> None:  # noqa: F811
    """Hostile: Eve reacts as fast as she can; others' reactions are still shown."""
    clock = Clock()
    client, target = await _setup(emulator, clock)
    await client.handle_matrix_reaction(_reaction(target, "1", "$e1"))
    await client.handle_matrix_reaction(_reaction(target, "2", "$e2"))
    with pytest.raises(NotSupported):
        await client.handle_matrix_reaction(_reaction(target, "3", "$e3"))
    for n in range(10):
        await client.handle_matrix_reaction(_reaction(target, "x", f"$e{n + 4}"))
    assert len(_posted(emulator)) == PER_SENDER
    await client.handle_matrix_reaction(_reaction(target, "👍", "$bob", "@bob:hub.example"))
    assert len(_posted(emulator)) == PER_SENDER + 1


async def test_without_a_relay_account_a_reaction_asks_for_a_login(
    emulator: Emulator,  # noqa: F811
) -> None:
    client, target = await _setup(emulator)
    for link in client.net.tenants.values():
        link.relay = None
    with pytest.raises(NotSupported) as refused:
        await client.handle_matrix_reaction(_reaction(target))
    assert "login teams" in (refused.value.user_message or "")
    assert _posted(emulator) == []
