"""``bridge-team <network> <group>`` (bridge.core.group_bridging): each readable chat of a group
in a new invite-only room, none twice, one failure stopping nothing.

The store is real (SQLite and PostgreSQL); the homeserver is the recorder of test_adopt and the
network a small in-memory one whose groups are lists of chats. The Teams connector's side is in
tests/teams/test_team_bridging.py, the whole path against Synapse in
tests/e2e/test_teams_team_bridging.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from mautrix.util.markdown import render

from bridge.core.clients import ClientRegistry
from bridge.core.connector import GroupChat
from bridge.core.errors import NotSupported, TransientError
from bridge.core.events import ChatInfo, SpaceInfo, UserInfo
from bridge.core.federation import FederationPolicy
from bridge.core.group_bridging import LIMIT, GroupBridged, bridge_group
from bridge.core.ids import LoginID, NetworkID, PortalKey, RemoteChatID, RemoteUserID
from bridge.core.metrics import Metrics
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.portal.audit import AuditStore
from bridge.portal.store import Store
from tests.test_adopt import ALICE, NET, OPEN_TO_ALL, OUTSIDER, Connector, Homeserver, NoBridging


class GroupNetwork:
    """A network whose group ``team`` has ``size`` chats; ``broken`` ones fail to bridge."""

    login_id = LoginID("")

    def __init__(self, size: int = 3) -> None:
        self.chats = [f"c{n}" for n in range(1, size + 1)]
        self.broken: set[str] = set()
        self.bridged: list[str] = []

    async def group_chats(self, group: str, matrix_user: str) -> list[GroupChat]:
        if group != "team":
            raise NotSupported(f"no group {group}", user_message="You are not in that group.")
        return [GroupChat(self._key(c), f"link:{c}", f"Chat {c}") for c in self.chats]

    async def bridge_room(self, remote_id: str, matrix_user: str) -> tuple[PortalKey, ChatInfo]:
        chat = remote_id.removeprefix("link:")
        if chat in self.broken:
            raise TransientError(f"{chat}: network away", user_message="The network is away.")
        self.bridged.append(chat)
        info = ChatInfo(name=f"Chat {chat}", members=[RemoteUserID("bob")], members_only=True,
                        matrix_users=[matrix_user], space=SpaceInfo(key="team", name="Team"))  # fmt: skip
        return self._key(chat), info

    async def get_chat_info(self, portal: PortalKey) -> ChatInfo:
        return ChatInfo(name=portal.remote_id)

    async def get_user_info(self, user: RemoteUserID) -> UserInfo:
        return UserInfo(name=user.capitalize())

    @staticmethod
    def _key(chat: str) -> PortalKey:
        return PortalKey(NET, RemoteChatID(chat))


class _Homeserver(Homeserver):
    async def invite(self, room_id: str, mxid: str) -> None:
        pass  # into the group's space


class Hub:
    def __init__(self, store: Store, network: Any) -> None:
        self.store, self.network, self.matrix = store, network, _Homeserver()
        self.connectors: Any = {NET: Connector("reference", "Reference"),
                                NetworkID("mail"): Connector("mail", "Mail")}  # fmt: skip
        self.log = logging.getLogger("test.group_bridging")
        matrix: Any = self.matrix
        self.portals = PortalManager(
            store=store, matrix=matrix, domain="hub.test", bridge_id="pontis",
            networks={n: c.info for n, c in self.connectors.items()}, log=self.log,
        )  # fmt: skip
        self.clients = ClientRegistry(self.connectors, Metrics(), self.log)
        self.clients.add(NET, network)
        self.clients.add(NetworkID("mail"), NoBridging())  # type: ignore[arg-type]

    async def run(self, sender: str = ALICE, group: str = "team", net: str = "reference") -> GroupBridged:  # fmt: skip
        return await bridge_group(
            group, sender, connector=self.connectors[NetworkID(net)], log=self.log,
            permissions=Permissions({"hub.test": "user", OUTSIDER: "relay"}),
            federation=FederationPolicy(OPEN_TO_ALL, "hub.test"), clients=self.clients,
            portals=self.portals, store=self.store, origin="room !dm:hub.test",
        )  # fmt: skip

    async def audit(self) -> list[tuple[str, str, str]]:
        return [(e.actor, e.action, e.outcome) for e in await AuditStore(self.store.database).newest()]  # fmt: skip


def _rooms(hub: Hub) -> list[str]:
    return [c["name"] for c in hub.matrix.created if c["name"] != "Team"]


@pytest.mark.parametrize(
    ("sender", "group", "net", "why"),
    [
        (OUTSIDER, "team", "reference", "may not bridge"),  # only relayed: no bridging
        (ALICE, "other", "reference", "not in that group"),  # the network refuses
        (ALICE, "team", "mail", "no groups"),  # the network has no groups
    ],
)
async def test_a_refusal_creates_nothing_and_is_audited(
    store: Store, sender: str, group: str, net: str, why: str
) -> None:
    hub = Hub(store, GroupNetwork())
    with pytest.raises(NotSupported) as refused:
        await hub.run(sender, group, net)
    assert why in refused.value.user_message or why in str(refused.value)
    assert hub.matrix.created == [] and hub.network.bridged == []
    assert await hub.audit() == [(sender, "bridge-team", "refused")]


async def test_each_chat_gets_an_invite_only_room_and_a_second_run_adds_none(
    store: Store,
) -> None:
    hub = Hub(store, GroupNetwork())
    done = await hub.run()
    assert _rooms(hub) == ["Chat c1", "Chat c2", "Chat c3"]
    for room in hub.matrix.created:
        assert room["invite"][0] == ALICE and room.get("alias_localpart") is None  # not public
    answer = done.answer("reference")
    assert answer.startswith("Bridged 3 chats") and "Chat c2: !created" in answer

    hub.network.chats.append("c4")  # a chat new in the group since
    again = await hub.run()
    assert _rooms(hub) == ["Chat c1", "Chat c2", "Chat c3", "Chat c4"]
    assert hub.network.bridged == ["c1", "c2", "c3", "c4"]  # the network was not asked again
    assert [c.name for c, _ in again.already] == ["Chat c1", "Chat c2", "Chat c3"]
    assert "Already bridged, left as they are:" in again.answer("reference")
    assert await hub.audit() == [(ALICE, "bridge-team", "ok")] * 2


async def test_a_failure_halfway_keeps_the_others_and_names_it(store: Store) -> None:
    network = GroupNetwork()
    network.broken = {"c2"}
    hub = Hub(store, network)
    done = await hub.run()
    assert _rooms(hub) == ["Chat c1", "Chat c3"]
    assert await hub.portals.find_portal(PortalKey(NET, RemoteChatID("c2"))) is None
    assert "Not bridged (send the command again to retry them):\n- Chat c2: The network is away." in done.answer("reference")  # fmt: skip
    assert await hub.audit() == [(ALICE, "bridge-team", "failed")]
    network.broken = set()
    retried = await hub.run()
    assert [c.name for c, _ in retried.bridged] == ["Chat c2"]


async def test_only_the_first_chats_are_bridged_and_the_rest_are_named(store: Store) -> None:
    hub = Hub(store, GroupNetwork(LIMIT + 2))
    answer = (await hub.run()).answer("reference")
    assert len(_rooms(hub)) == LIMIT
    assert f"Only the first {LIMIT} are bridged at a time; left out: Chat c51, Chat c52." in answer
    again = await hub.run()  # the chats bridged already do not count: the rest are bridged now
    assert [c.name for c, _ in again.bridged] == ["Chat c51", "Chat c52"]
    assert len(again.already) == LIMIT and again.left_out == []
    assert len(_rooms(hub)) == LIMIT + 2


async def test_a_group_with_nothing_readable_says_so(store: Store) -> None:
    hub = Hub(store, GroupNetwork(0))
    assert (await hub.run()).answer("reference") == "There is nothing in it you can read to bridge."


async def test_a_chat_name_with_markup_shows_as_written(store: Store) -> None:
    """Hostile: a chat named like a link or HTML is not a link or markup in the answer."""
    network = GroupNetwork(1)
    hub = Hub(store, network)
    original = network.group_chats

    async def named(group: str, matrix_user: str) -> list[GroupChat]:
        chat = (await original(group, matrix_user))[0]
        return [GroupChat(chat.key, chat.bridge_id, "[Login](https://evil.example) <b>now</b>")]

    network.group_chats = named  # type: ignore[method-assign]
    html = render((await hub.run()).answer("reference"))
    assert "<a " not in html and "<b>" not in html
    assert "[Login](https://evil.example) &lt;b&gt;now&lt;/b&gt;: !created" in html
