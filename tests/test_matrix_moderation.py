"""A Matrix moderator's kick or ban of a ghost reaches the network (``SupportsKicks``), as do
new power levels (``SupportsPowerLevels``) and topics (``SupportsRoomMetadata``); what the
bridge does itself, and kicks of Matrix users, do not. Real store, router and Matrix event
handler; the homeserver and the network record what they were asked (as in
tests/test_permissions.py)."""

from __future__ import annotations

from typing import Any

from bridge.core.events import MatrixKick, RemoteKick, RemotePowerLevel
from bridge.core.ids import RemoteUserID
from bridge.portal.store import Store
from tests.test_permissions import ALICE, BOT, KEY, NET, OUTSIDER, ROOM, Hub, MailClient

GHOST = "@mail_mallory=40evil.test:hub.test"
JOINED = {"prev_content": {"membership": "join"}}
"""``unsigned`` of a member event whose target was in the room before."""


class KickingClient(MailClient):
    def __init__(self) -> None:
        super().__init__()
        self.kicks: list[MatrixKick] = []
        self.levels: list[tuple[dict[str, Any], list[str]]] = []
        self.topics: list[tuple[str | None, str, str]] = []

    async def handle_matrix_kick(self, kick: MatrixKick) -> None:
        self.kicks.append(kick)

    async def handle_matrix_power_levels(self, portal: Any, levels: dict[str, Any],
                                         creators: list[str]) -> None:  # fmt: skip
        self.levels.append((levels, creators))

    async def handle_matrix_room_info(self, portal: Any, info: Any, *, sender: str,
                                      sender_name: str) -> None:  # fmt: skip
        self.topics.append((info.topic, sender, sender_name))


async def _hub(store: Store) -> tuple[Hub, KickingClient]:
    hub = Hub(store, relay_enabled=True)
    client = KickingClient()
    hub.router.add_client(NET, client)  # type: ignore[arg-type]  # replaces the mail client
    await hub.portal(relay=True)
    return hub, client


async def test_kicks_and_bans_of_ghosts_by_moderators_reach_the_network(store: Store) -> None:
    hub, client = await _hub(store)
    await hub.event(ALICE, "m.room.member", {"membership": "leave", "reason": "rude"},
                    state_key=GHOST, unsigned=JOINED)  # fmt: skip
    await hub.event(ALICE, "m.room.member", {"membership": "ban"}, state_key=GHOST)
    assert [(k.sender, k.target, k.ban, k.reason) for k in client.kicks] == [
        (ALICE, GHOST, False, "rude"), (ALICE, GHOST, True, ""),
    ]  # fmt: skip
    assert not any(k.unban for k in client.kicks)


async def test_an_unban_or_a_withdrawn_invite_is_no_kick(store: Store) -> None:
    """A leave by someone else is a kick only after a join: lifting a ban says so, and
    withdrawing an invite (or a leave of someone who had left) says nothing."""
    hub, client = await _hub(store)
    await hub.event(ALICE, "m.room.member", {"membership": "ban"}, state_key=GHOST)
    await hub.event(ALICE, "m.room.member", {"membership": "leave"}, state_key=GHOST,
                    unsigned={"prev_content": {"membership": "ban"}})  # fmt: skip
    assert [(k.ban, k.unban) for k in client.kicks] == [(True, False), (False, True)]
    for prev in ({"prev_content": {"membership": "invite"}},
                 {"prev_content": {"membership": "leave"}}, {}):  # fmt: skip
        await hub.event(ALICE, "m.room.member", {"membership": "leave"}, state_key=GHOST,
                        unsigned=prev)  # fmt: skip
    assert len(client.kicks) == 2


async def test_what_is_no_moderators_kick_of_a_ghost_does_not_reach_the_network(
    store: Store,
) -> None:
    hub, client = await _hub(store)
    cases: list[tuple[str, dict[str, Any], str]] = [
        (ALICE, {"membership": "leave"}, "@bob:hub.test"),  # a Matrix user: the homeserver's
        (BOT, {"membership": "leave"}, GHOST),  # the bridge tidying up
        (GHOST, {"membership": "leave"}, GHOST),  # the ghost leaving: a leave, not a kick
        (ALICE, {"membership": "invite"}, GHOST),
    ]
    for sender, content, target in cases:
        await hub.event(sender, "m.room.member", content, state_key=target)
    assert client.kicks == []


async def test_a_relay_level_moderators_ban_reaches_the_network_marked_relayed(
    store: Store,
) -> None:
    """Not a member on the network, but a room the network hosts through the bridge obeys
    every Matrix moderator the homeserver allowed."""
    hub, client = await _hub(store)
    await hub.event(OUTSIDER, "m.room.member", {"membership": "ban"}, state_key=GHOST)
    assert [(k.sender, k.ban, k.relayed) for k in client.kicks] == [(OUTSIDER, True, True)]
    await hub.event(ALICE, "m.room.member", {"membership": "ban"}, state_key=GHOST)
    assert client.kicks[1].relayed is False


async def test_a_kick_on_the_network_is_the_bots_kick_of_the_ghost(store: Store) -> None:
    hub, client = await _hub(store)
    kicked: list[tuple[str, str, str, bool]] = []

    async def kick(room_id: str, mxid: str, reason: str = "", *, ban: bool = False) -> None:
        kicked.append((room_id, mxid, reason, ban))

    hub.matrix.kick = kick  # type: ignore[attr-defined]
    event = RemoteKick(portal=KEY, target=RemoteUserID("mallory@evil.test"), ban=True,
                       reason="spam")  # fmt: skip
    await hub.portals.handle(event, client)  # type: ignore[arg-type]
    [(room, ghost, reason, ban)] = kicked
    assert (room, reason, ban) == (ROOM, "spam", True)
    assert ghost == GHOST
    # A kick of someone whose ghost is not in the room (they never spoke) is nothing to do.
    await hub.portals.handle(RemoteKick(portal=KEY, target=RemoteUserID("mallory@evil.test")),
                             client)  # type: ignore[arg-type]  # fmt: skip
    assert len(kicked) == 1
    hub.matrix.members = {GHOST: "mallory"}
    await hub.portals.handle(RemoteKick(portal=KEY, target=RemoteUserID("mallory@evil.test")),
                             client)  # type: ignore[arg-type]  # fmt: skip
    assert kicked[1] == (ROOM, GHOST, "", False)
    # The ghost's leave that follows is the bridge's own doing: it goes back nowhere.
    await hub.event(BOT, "m.room.member", {"membership": "ban"}, state_key=GHOST)
    assert client.kicks == []


async def test_power_levels_and_topics_reach_the_network_but_not_the_bridges_own(
    store: Store,
) -> None:
    hub, client = await _hub(store)
    levels = {"users": {ALICE: 100, "@bob:hub.test": 50}}
    await hub.event(ALICE, "m.room.power_levels", levels, state_key="")
    await hub.event(ALICE, "m.room.power_levels", levels, state_key="not-empty")  # no such state
    assert client.levels == [(levels, [])]
    await hub.event(ALICE, "m.room.topic", {"topic": "Plans"}, state_key="")
    await hub.event(BOT, "m.room.topic", {"topic": "from XMPP"}, state_key="")  # an echo
    await hub.event(GHOST, "m.room.topic", {"topic": "from XMPP"}, state_key="")
    await hub.event(OUTSIDER, "m.room.topic", {"topic": "relay level"}, state_key="")
    await hub.event(ALICE, "m.room.topic", {"topic": ["not", "text"]}, state_key="")
    assert client.topics == [("Plans", ALICE, "Alice")]


async def test_rights_on_the_network_are_the_ghosts_power_level_once(store: Store) -> None:
    hub, client = await _hub(store)
    hub.matrix.state = []
    mallory = RemoteUserID("mallory@evil.test")
    await hub.portals.handle(RemotePowerLevel(portal=KEY, target=mallory, level=50), client)  # type: ignore[arg-type]
    [(room, event_type, content)] = hub.matrix.state
    assert (room, event_type) == (ROOM, "m.room.power_levels")
    assert content["users"] == {ALICE: 100, GHOST: 50} and content["state_default"] == 50
    hub.matrix.levels = content  # the homeserver has it now: asking again changes nothing
    await hub.portals.handle(RemotePowerLevel(portal=KEY, target=mallory, level=50), client)  # type: ignore[arg-type]
    assert len(hub.matrix.state) == 1
    await hub.portals.handle(RemotePowerLevel(portal=KEY, target=mallory, level=0), client)  # type: ignore[arg-type]
    assert hub.matrix.state[-1][2]["users"] == {ALICE: 100}  # back to the default: no entry
