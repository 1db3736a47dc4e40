"""Who reads a bridged channel (bridge.teams.channel_members): a private channel's room holds
only its members, people removed in Teams leave the room, and a member-change notification is
never believed on its own word. Against the Graph emulator through the unmodified msgraph-sdk."""

from __future__ import annotations

from typing import Any
from unittest.mock import AsyncMock

import pytest

from bridge.core import (
    LoginID,
    PermanentError,
    PortalKey,
    RemoteChatID,
    RemoteChatInfo,
    RemoteEvent,
    RemoteKick,
    RemoteMessage,
)
from bridge.portal.models import Login, Portal, RemoteInput
from bridge.teams import channel_members
from bridge.teams.channel_inbound import NOTIFICATION, TOKEN, ChannelInbound
from bridge.teams.ids import NETWORK, channel_key
from bridge.teams.network import TeamsNetwork
from tests.teams.test_group_members import ANNA, BOB, _kv
from tests.teams.test_members import _net
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)

CAROL = "@carol:hub.example"
BOT = "@pontis:hub.example"


class _Channel:
    """A channel of the seeded team (Adele and Alex), bridged to ``!room:hub``; Anna is
    logged in to Teams as Adele. Megan, the relay account, is in no team."""

    def __init__(self, emu: Emulator, net: TeamsNetwork, link: Any, team: str, channel: str):
        self.emu, self.net, self.link = emu, net, link
        self.team, self.channel = team, channel
        self.key = channel_key(team, channel)
        self.room: dict[str, str] = {}
        net.ctx.matrix_members = AsyncMock(side_effect=lambda room: dict(self.room))

    @property
    def portal_id(self) -> str:
        return self.key.remote_id

    def login(self, **accounts: str) -> None:
        logins = [
            Login(network=NETWORK, login_id=LoginID(self.emu.user(name)["id"]), user_mxid=mxid)
            for name, mxid in accounts.items()
        ]
        self.net.ctx.store.list_logins = AsyncMock(return_value=logins)

    def members_path(self) -> str:
        return f"/teams/{self.team}/channels/{self.channel}/members"

    async def notification(self, msg_id: str) -> RemoteInput:
        """The input the webhook keeps for Graph's notification of ``msg_id``."""
        resource = f"teams('{self.team}')/channels('{self.channel}')/messages('{msg_id}')"
        payload = {"changeType": "created", "resource": resource, TOKEN: f"t-{msg_id}"}
        return RemoteInput(self.key, NOTIFICATION, payload, dedupe_id=f"created:{msg_id}")

    def last_system_message(self) -> str:
        messages = self.emu.services.state.channels[self.channel].messages.values()
        return [m.id for m in messages if m.event_detail][-1]


async def _bridged(emu: Emulator, kind: str = "private", members: tuple[str, ...] = ()) -> _Channel:
    net, link = _net(emu)
    _kv(net)
    await link.resolve_relay()
    team = emu.seeded["tenants"][0]["teams"][0]["id"]
    if kind == "standard":
        channel = emu.seeded["tenants"][0]["teams"][0]["channels"][0]["id"]
    else:
        body = {"displayName": "Board", "membershipType": kind,
                "members": [emu.user(n)["id"] for n in members]}  # fmt: skip
        channel = (await emu.control("POST", f"/teams/{team}/channels", body))["id"]
    bridged = _Channel(emu, net, link, team, channel)
    portal = Portal(network=NETWORK, remote_id=bridged.portal_id, mxid="!room:hub")
    net.ctx.store.get_portal = AsyncMock(return_value=portal)
    net.ctx.store.get_message = AsyncMock(return_value=None)
    net.ctx.store.get_ghost = AsyncMock(return_value=None)  # senders' photos (avatars.py)
    net.ctx.bot_mxid = BOT
    net.ctx.matrix_power_levels = AsyncMock(return_value=({"users": {BOT: 100}}, []))
    await net.remember_chat(bridged.portal_id, link.id)
    return bridged


def _inbound(net: TeamsNetwork) -> ChannelInbound:
    async def people(msg: Any) -> dict[Any, str]:
        return {}

    async def edited(*args: Any) -> bool:
        return False

    class _Subscriptions:
        missed = None

    return ChannelInbound(net, _Subscriptions(), people, edited)  # type: ignore[arg-type]


def _kicks(events: list[RemoteEvent]) -> list[RemoteKick]:
    return [e for e in events if isinstance(e, RemoteKick)]


@pytest.mark.parametrize("kind", ["private", "shared"])
async def test_a_private_channels_message_never_reaches_a_matrix_user_outside_it(
    emulator: Emulator,  # noqa: F811
    kind: str,
) -> None:
    """Hostile: Bob (no Teams login) and Carol (logged in as Alex, who is in the team but not
    in the private channel) were invited into the room by a member. The channel's next message
    comes only after both are removed; Anna (Adele, a member) and the bot stay."""
    bridged = await _bridged(emulator, kind, ("adele",))
    bridged.login(adele=ANNA, alex=CAROL)
    assert await channel_members.at_bridging(bridged.net, bridged.link, bridged.portal_id) == []
    bridged.room = {ANNA: "Anna", BOB: "Bob", CAROL: "Carol", BOT: "Pontis"}
    adele = emulator.user("adele")["id"]
    posted = await emulator.control(
        "POST", f"/teams/{bridged.team}/channels/{bridged.channel}/messages",
        {"from": adele, "content": "board minutes"},
    )  # fmt: skip
    events = await _inbound(bridged.net).convert(await bridged.notification(posted["id"]))
    assert [type(e) for e in events] == [RemoteKick, RemoteKick, RemoteMessage]
    assert [k.matrix_user for k in _kicks(list(events))] == [BOB, CAROL]
    assert all(k.reason == channel_members.NOT_A_MEMBER for k in _kicks(list(events)))


async def test_nothing_of_a_private_channel_is_shown_while_the_bot_may_not_remove_strangers(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Hostile: a room of Anna's own where the bot has no moderator power, and Bob invited
    into it: the channel's message is not converted at all (the core sets it aside and says
    why), rather than shown to Bob."""
    bridged = await _bridged(emulator, "private", ("adele",))
    bridged.login(adele=ANNA)
    await channel_members.at_bridging(bridged.net, bridged.link, bridged.portal_id)
    bridged.room = {ANNA: "Anna", BOB: "Bob", BOT: "Pontis"}
    levels = {"users": {ANNA: 100}, "users_default": 0, "kick": 50}
    bridged.net.ctx.matrix_power_levels = AsyncMock(return_value=(levels, []))
    posted = await emulator.control(
        "POST", f"/teams/{bridged.team}/channels/{bridged.channel}/messages",
        {"from": emulator.user("adele")["id"], "content": "board minutes"},
    )  # fmt: skip
    with pytest.raises(PermanentError) as refused:
        await _inbound(bridged.net).convert(await bridged.notification(posted["id"]))
    assert refused.value.user_message == channel_members.CANNOT_REMOVE
    bridged.room = {ANNA: "Anna", BOT: "Pontis"}  # Anna removed Bob herself: shown
    events = await _inbound(bridged.net).convert(await bridged.notification(posted["id"]))
    assert [type(e) for e in events] == [RemoteMessage]


async def test_a_standard_channels_room_is_not_emptied_of_people_without_a_login(
    emulator: Emulator,  # noqa: F811
) -> None:
    bridged = await _bridged(emulator, "standard")
    bridged.login(adele=ANNA)
    ghosts = await channel_members.at_bridging(bridged.net, bridged.link, bridged.portal_id)
    assert ghosts == [emulator.user("alex")["id"]]  # the team's people; Anna is herself
    bridged.room = {ANNA: "Anna", BOB: "Bob"}
    assert await channel_members.outsiders(bridged.net, bridged.key, "!room:hub") == []


async def test_a_member_removed_in_teams_is_removed_in_matrix(emulator: Emulator) -> None:  # noqa: F811
    bridged = await _bridged(emulator, "private", ("adele", "alex"))
    bridged.login(adele=ANNA, alex=CAROL)
    await channel_members.at_bridging(bridged.net, bridged.link, bridged.portal_id)
    bridged.room = {ANNA: "Anna", CAROL: "Carol"}
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    await emulator.control("DELETE", f"{bridged.members_path()}/{alex}?as={adele}")
    item = await bridged.notification(bridged.last_system_message())
    events = await _inbound(bridged.net).convert(item)
    assert [(k.matrix_user, k.reason) for k in _kicks(list(events))] == [
        (CAROL, channel_members.REMOVED)
    ]
    bridged.room = {ANNA: "Anna"}
    assert _kicks(list(await _inbound(bridged.net).convert(item))) == []  # replayed: once


async def test_a_ghost_leaves_when_its_person_leaves_the_channel(emulator: Emulator) -> None:  # noqa: F811
    bridged = await _bridged(emulator, "private", ("adele", "alex"))
    bridged.login(adele=ANNA)
    assert await channel_members.at_bridging(bridged.net, bridged.link, bridged.portal_id) == [
        emulator.user("alex")["id"]
    ]
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    await emulator.control("DELETE", f"{bridged.members_path()}/{alex}?as={adele}")
    events = await channel_members.reconcile(bridged.net, bridged.link, bridged.portal_id)
    info = next(e for e in events if isinstance(e, RemoteChatInfo))
    assert info.info.members == []
    [kick] = _kicks(events)
    assert kick.target == alex and kick.leave and not kick.matrix_user


async def test_a_replayed_or_forged_member_change_adds_nobody(emulator: Emulator) -> None:  # noqa: F811
    """Hostile: the notification of "Alex was added" arrives again after Alex was removed, and
    one names an ordinary message as if it were a member change. Graph's list decides: Carol
    (Alex's login) is not invited, Alex's ghost does not join."""
    bridged = await _bridged(emulator, "private", ("adele",))
    bridged.login(adele=ANNA, alex=CAROL)
    await channel_members.at_bridging(bridged.net, bridged.link, bridged.portal_id)
    bridged.room = {ANNA: "Anna"}
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    await emulator.control("POST", bridged.members_path(), {"as": adele, "user": alex})
    added = await bridged.notification(bridged.last_system_message())
    await emulator.control("DELETE", f"{bridged.members_path()}/{alex}?as={adele}")
    inbound = _inbound(bridged.net)
    events = await inbound.convert(added)
    infos = [e.info for e in events if isinstance(e, RemoteChatInfo)]
    assert infos and all(alex not in (i.members or []) and not i.matrix_users for i in infos)
    posted = await emulator.control(
        "POST", f"/teams/{bridged.team}/channels/{bridged.channel}/messages",
        {"from": adele, "content": "<p>added Alex</p>"},
    )  # fmt: skip
    forged = await inbound.convert(await bridged.notification(posted["id"]))
    assert not any(isinstance(e, RemoteChatInfo) for e in forged)
    assert all(isinstance(e, RemoteMessage) for e in forged)


async def test_an_addition_graph_confirms_invites_the_login_and_joins_nobody_else(
    emulator: Emulator,  # noqa: F811
) -> None:
    bridged = await _bridged(emulator, "private", ("adele",))
    bridged.login(adele=ANNA, alex=CAROL)
    await channel_members.at_bridging(bridged.net, bridged.link, bridged.portal_id)
    bridged.room = {ANNA: "Anna"}
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    await emulator.control("POST", bridged.members_path(), {"as": adele, "user": alex})
    events = await _inbound(bridged.net).convert(
        await bridged.notification(bridged.last_system_message())
    )
    [info] = [e.info for e in events if isinstance(e, RemoteChatInfo)]
    assert info.matrix_users == [CAROL] and info.members == []
    assert _kicks(list(events)) == []


async def test_removals_while_down_reach_the_room_before_the_missed_messages(
    emulator: Emulator,  # noqa: F811
) -> None:
    bridged = await _bridged(emulator, "private", ("adele", "alex"))
    bridged.login(adele=ANNA, alex=CAROL)
    await channel_members.at_bridging(bridged.net, bridged.link, bridged.portal_id)
    bridged.room = {ANNA: "Anna", CAROL: "Carol"}
    adele, alex = emulator.user("adele")["id"], emulator.user("alex")["id"]
    await emulator.control("DELETE", f"{bridged.members_path()}/{alex}?as={adele}")
    inbound = _inbound(bridged.net)

    async def run(*args: Any) -> list[Any]:
        return ["missed"]

    inbound._catching_up.run = run  # type: ignore[method-assign]
    key = PortalKey(NETWORK, RemoteChatID(bridged.portal_id))
    events = await inbound._catch_up(key, (bridged.team, bridged.channel), "t1")
    assert events[-1] == "missed"
    assert [k.matrix_user for k in _kicks(events[:-1])] == [CAROL]


async def test_members_on_later_pages_are_members(emulator: Emulator) -> None:  # noqa: F811
    """Graph pages a big channel's members: Carol (logged in as Alex, listed on the second
    page of one) is a member and stays; Bob (no login) is removed. A list cut short by the
    page cap removes nobody, and shows nothing until it is read whole."""
    emulator.services.config.members_page_size = 1
    bridged = await _bridged(emulator, "private", ("adele", "alex"))
    bridged.login(adele=ANNA, alex=CAROL)
    assert await channel_members.at_bridging(bridged.net, bridged.link, bridged.portal_id) == []
    bridged.room = {ANNA: "Anna", BOB: "Bob", CAROL: "Carol", BOT: "Pontis"}
    events = await channel_members.outsiders(bridged.net, bridged.key, "!room:hub")
    assert [k.matrix_user for k in _kicks(events)] == [BOB]
    assert len(emulator.requests(f"/v1.0{bridged.members_path()}*", "GET")) >= 2

    channel_members.MAX_MEMBER_PAGES, pages = 1, channel_members.MAX_MEMBER_PAGES
    try:
        _, accounts, whole = await channel_members.read(
            bridged.net, bridged.link, bridged.portal_id
        )
    finally:
        channel_members.MAX_MEMBER_PAGES = pages
    assert not whole and len(accounts) == 1
    with pytest.raises(PermanentError, match="not all read"):
        await channel_members.outsiders(bridged.net, bridged.key, "!room:hub")
