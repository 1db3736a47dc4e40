"""The one path by which a Matrix room and a remote chat become a portal (bridge.core.adopt).

The store is real (SQLite and PostgreSQL); the homeserver is a recorder of what the bridge asked
of it, and the network a small in-memory one. The e2e tests run the same paths against Synapse
(tests/e2e/test_adopt.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bridge.core.adopt import Refused, RoomBridging
from bridge.core.clients import ClientRegistry
from bridge.core.connector import NetworkInfo
from bridge.core.errors import BridgeError, NotFound
from bridge.core.events import ChatInfo, UserInfo
from bridge.core.federation import FederationPolicy, Refusal
from bridge.core.ids import LoginID, NetworkID, PortalKey, RemoteChatID, RemoteUserID
from bridge.core.metrics import Metrics
from bridge.core.permissions import Permissions
from bridge.core.portals import PortalManager
from bridge.portal.audit import AuditStore
from bridge.portal.store import Store

NET = NetworkID("reference")
ALICE, OUTSIDER = "@alice:hub.test", "@outsider:hub.test"
BOT = "@pontis:hub.test"


class Homeserver:
    """What the bridge asked of Matrix, and a few rooms and aliases that exist there."""

    bot_mxid = BOT
    encryption = None

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.closed: set[str] = set()
        self.joins: list[str] = []
        self.state: list[tuple[str, str]] = []
        self.added_aliases: list[tuple[str, str]] = []
        self.created: list[dict[str, Any]] = []
        self.levels: dict[str, dict[str, Any]] = {}
        """room id → its m.room.power_levels; a room not here: Alice created it."""

    async def power_levels(self, room_id: str) -> tuple[dict[str, Any], list[str]]:
        return self.levels.get(room_id, {"users": {ALICE: 100}, "state_default": 50}), []

    async def resolve_alias(self, alias: str) -> str | None:
        return self.aliases.get(alias)

    async def join(self, room_id: str, *, mxid: str | None = None) -> None:
        if room_id in self.closed:
            raise BridgeError(f"cannot join {room_id}")
        self.joins.append(room_id)

    async def room_name_and_topic(self, room_id: str) -> tuple[str | None, str | None]:
        return "Lobby", "Matrix lobby"

    async def room_encrypted(self, room_id: str) -> bool:
        return False

    async def set_state(
        self, sender: str, room_id: str, event_type: str, content: Any, state_key: str
    ) -> None:
        self.state.append((room_id, event_type))

    async def add_alias(self, room_id: str, localpart: str) -> None:
        self.added_aliases.append((room_id, localpart))

    async def create_room(self, **kwargs: Any) -> str:
        self.created.append(kwargs)
        return f"!created{len(self.created)}:hub.test"

    async def ensure_registered(self, mxid: str) -> None:
        pass

    async def set_profile(self, mxid: str, **_: Any) -> None:
        pass

    async def ensure_joined(self, mxid: str, room_id: str) -> None:
        pass


class Network:
    """A network client whose chats can be bridged into existing rooms."""

    login_id = LoginID("")

    def __init__(self, chats: set[str]) -> None:
        self.chats = chats
        self.asked: list[tuple[str, str]] = []

    async def bridge_room(self, remote_id: str, matrix_user: str) -> tuple[PortalKey, ChatInfo]:
        self.asked.append((remote_id, matrix_user))
        await asyncio.sleep(0)  # the network answers later: other requests run meanwhile
        if remote_id not in self.chats:
            raise NotFound(f"no chat {remote_id}", user_message=f"There is no chat {remote_id}.")
        key = PortalKey(NET, RemoteChatID(remote_id))
        return key, await self.get_chat_info(key)

    async def get_chat_info(self, portal: PortalKey) -> ChatInfo:
        return ChatInfo(name=f"Chat {portal.remote_id}", members=[RemoteUserID("bob")])

    async def get_user_info(self, user: RemoteUserID) -> UserInfo:
        return UserInfo(name=user.capitalize())


class NoBridging:
    """A client of a network whose chats cannot be bridged into existing rooms."""

    login_id = LoginID("")


class Connector:
    def __init__(self, network: str, name: str) -> None:
        self.info = NetworkInfo(id=NetworkID(network), display_name=name)


OPEN_TO_ALL = [{"network": "*", "remote": ["*"], "matrix": ["*"]}]


class Hub:
    def __init__(
        self,
        store: Store,
        rules: list[dict[str, Any]] | None = OPEN_TO_ALL,
        *,
        public_portals: bool = True,
    ) -> None:
        self.store = store
        self.matrix = Homeserver()
        self.network = Network({"one", "two", "team@muc"})
        connectors: Any = {NET: Connector("reference", "Reference"),
                           NetworkID("mail"): Connector("mail", "Mail")}  # fmt: skip
        log = logging.getLogger("test.adopt")
        matrix: Any = self.matrix
        self.portals = PortalManager(
            store=store, matrix=matrix, domain="hub.test", bridge_id="pontis",
            networks={n: c.info for n, c in connectors.items()}, log=log,
        )  # fmt: skip
        clients = ClientRegistry(connectors, Metrics(), log)
        clients.add(NET, self.network)  # type: ignore[arg-type]
        clients.add(NetworkID("mail"), NoBridging())  # type: ignore[arg-type]
        self.bridging = RoomBridging(
            store=store, matrix=matrix, portals=self.portals, clients=clients,
            connectors=connectors, domain="hub.test", log=log,
            permissions=Permissions(
                {"hub.test": "user", OUTSIDER: "relay"}, public_portals=public_portals
            ),
            federation=FederationPolicy(rules, "hub.test", on_refusal=self._refused),
        )  # fmt: skip
        self.refusals: list[tuple[str, str]] = []

    def _refused(self, refused: Refusal, entry: str) -> None:
        self.refusals.append((entry, str(refused)))

    async def room_of(self, chat: str) -> str | None:
        portal = await self.store.get_portal(PortalKey(NET, RemoteChatID(chat)))
        return None if portal is None else portal.mxid

    async def chat_of(self, room_id: str) -> str | None:
        portal = await self.store.get_portal_by_mxid(room_id)
        return None if portal is None else portal.remote_id


@pytest.fixture
def hub(store: Store) -> Hub:
    return Hub(store)


# --- refusals: each changes nothing --------------------------------------------------------------


@pytest.mark.parametrize("levels", [
    {"users": {ALICE: 100, "@bob:hub.test": 0}, "state_default": 50},  # an ordinary member
    {"users": {"@bob:hub.test": 49}, "users_default": 49, "state_default": 50},
    {"users": {"@bob:hub.test": 50}, "events": {"m.bridge": 100}},  # m.bridge needs more
])  # fmt: skip
async def test_bridge_by_a_member_without_the_power_level_is_refused(
    hub: Hub, levels: dict[str, Any]
) -> None:
    hub.matrix.levels["!room:hub.test"] = levels
    with pytest.raises(Refused) as refused:
        await hub.bridging.bridge_command("!room:hub.test", "@bob:hub.test", "reference", "one")
    assert "power level" in refused.value.user_message
    assert await hub.chat_of("!room:hub.test") is None
    assert await hub.room_of("one") is None
    assert hub.matrix.state == [] and hub.network.asked == []  # the network was not asked
    assert "!room:hub.test" not in hub.portals.room_keys
    audit = await AuditStore(hub.store.database).newest()
    assert [(e.actor, e.action, e.outcome) for e in audit] == [
        ("@bob:hub.test", "bridge", "refused")
    ]
    assert "power level" in audit[0].detail


async def test_unbridge_needs_the_power_level_and_then_forgets_the_portal(hub: Hub) -> None:
    await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", "one")
    hub.matrix.levels["!room:hub.test"] = {"users": {ALICE: 100}, "state_default": 50}
    for stranger in ("@bob:hub.test", OUTSIDER):
        with pytest.raises(Refused):
            await hub.bridging.unbridge("!room:hub.test", stranger)
    assert await hub.chat_of("!room:hub.test") == "one"
    portal = await hub.bridging.unbridge("!room:hub.test", ALICE)
    assert portal.remote_id == "one"
    assert await hub.chat_of("!room:hub.test") is None
    assert "!room:hub.test" not in hub.portals.room_keys
    assert hub.matrix.state[-2:] == [("!room:hub.test", "m.bridge"),
                                     ("!room:hub.test", "uk.half-shot.bridge")]  # fmt: skip
    with pytest.raises(Refused) as again:
        await hub.bridging.unbridge("!room:hub.test", ALICE)
    assert again.value.user_message == "This room is not bridged."
    unbridges = await AuditStore(hub.store.database).newest(action="unbridge")
    assert [(e.actor, e.outcome) for e in reversed(unbridges)] == [
        ("@bob:hub.test", "refused"), (OUTSIDER, "refused"), (ALICE, "ok"), (ALICE, "refused"),
    ]  # fmt: skip
    # and the chat may be bridged again, here or elsewhere
    await hub.bridging.bridge_command("!other:hub.test", ALICE, "reference", "one")
    assert await hub.room_of("one") == "!other:hub.test"


async def test_private_portals_are_not_created_through_an_alias(store: Store) -> None:
    hub = Hub(store, public_portals=False)
    assert await hub.bridging.alias_query("#reference_team=40muc:hub.test") is None
    assert hub.matrix.created == [] and hub.network.asked == []  # the network was not asked
    # A chat bridged already is still found by its alias (its room decides who may join).
    await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", "one")
    portal = await hub.bridging.alias_query("#reference_one:hub.test")
    assert portal is not None and portal.mxid == "!room:hub.test"
    assert hub.matrix.added_aliases == [("!room:hub.test", "reference_one")]


async def test_a_room_that_is_already_a_portal_is_not_bridged_again(hub: Hub) -> None:
    await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", "one")
    state = list(hub.matrix.state)
    with pytest.raises(Refused) as refused:
        await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", "two")
    assert refused.value.user_message == "This room is already bridged."
    assert await hub.chat_of("!room:hub.test") == "one"
    assert await hub.room_of("two") is None
    assert hub.matrix.state == state
    assert [chat for chat, _ in hub.network.asked] == ["one"]  # the network was not even asked


async def test_a_chat_bridged_elsewhere_is_not_bridged_into_a_second_room(hub: Hub) -> None:
    await hub.bridging.bridge_command("!first:hub.test", ALICE, "reference", "one")
    with pytest.raises(Refused) as refused:
        await hub.bridging.bridge_command("!second:hub.test", ALICE, "reference", "one")
    assert refused.value.user_message == "`one` is already bridged to !first:hub.test."
    assert await hub.room_of("one") == "!first:hub.test"
    assert await hub.chat_of("!second:hub.test") is None
    assert all(room == "!first:hub.test" for room, _ in hub.matrix.state)
    assert await hub.store.list_portals_for_user(ALICE) != []


async def test_two_rooms_asking_for_one_chat_at_once_get_it_once(hub: Hub) -> None:
    results = await asyncio.gather(
        hub.bridging.bridge_command("!a:hub.test", ALICE, "reference", "one"),
        hub.bridging.bridge_command("!b:hub.test", ALICE, "reference", "one"),
        return_exceptions=True,
    )
    refusals = [r for r in results if isinstance(r, Refused)]
    assert len(refusals) == 1, results
    winner = await hub.room_of("one")
    assert winner in ("!a:hub.test", "!b:hub.test")
    loser = "!b:hub.test" if winner == "!a:hub.test" else "!a:hub.test"
    assert await hub.chat_of(loser) is None


async def test_a_sender_who_is_not_allowed_changes_nothing(hub: Hub) -> None:
    for sender in (OUTSIDER, "@mallory:elsewhere.test"):
        with pytest.raises(Refused) as refused:
            await hub.bridging.bridge_command("!room:hub.test", sender, "reference", "one")
        assert refused.value.user_message == "You may not bridge rooms through this bridge."
    assert hub.network.asked == []
    assert await hub.room_of("one") is None and hub.matrix.state == []


async def test_an_unknown_network_or_chat_or_one_without_bridging_is_refused(hub: Hub) -> None:
    with pytest.raises(Refused) as unknown:
        await hub.bridging.bridge_command("!room:hub.test", ALICE, "nonet", "one")
    assert (
        unknown.value.user_message == "There is no network `nonet` here. Networks: reference, mail."
    )
    with pytest.raises(Refused) as no_bridging:
        await hub.bridging.bridge_command("!room:hub.test", ALICE, "mail", "one")
    assert no_bridging.value.user_message == "Mail chats cannot be bridged into existing rooms."
    with pytest.raises(NotFound):
        await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", "nothing")
    assert await hub.chat_of("!room:hub.test") is None and hub.matrix.state == []


@pytest.mark.parametrize(
    "alias",
    [
        "#nonet_one:hub.test",  # no such network
        "#reference_one:other.test",  # another server's alias
        "#reference_:hub.test",  # no chat
        "#reference_=zz:hub.test",  # not an escaped id
        "#reference_nothing:hub.test",  # the network has no such chat
        "#mail_one:hub.test",  # the network cannot bridge rooms
        "reference_one:hub.test",  # not an alias
    ],
)
async def test_an_alias_that_names_no_bridgeable_chat_is_not_found(hub: Hub, alias: str) -> None:
    assert await hub.bridging.alias_query(alias) is None
    assert hub.matrix.created == [] and hub.matrix.added_aliases == []


async def test_a_hosted_room_alias_naming_another_chat_s_portal_is_not_taken_over(hub: Hub) -> None:
    await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", "one")
    hub.matrix.aliases["#lobby:hub.test"] = "!room:hub.test"
    hosted = PortalKey(NET, RemoteChatID("lobby@rooms"))
    assert await hub.bridging.adopt_alias(hosted, "#lobby:hub.test") is None
    assert await hub.chat_of("!room:hub.test") == "one"
    assert hub.portals.room_keys["!room:hub.test"].remote_id == "one"
    assert await hub.store.get_portal(hosted) is None
    assert hub.matrix.joins == []


async def test_a_hosted_room_the_bot_cannot_join_or_that_does_not_exist_is_none(hub: Hub) -> None:
    hosted = PortalKey(NET, RemoteChatID("lobby@rooms"))
    assert await hub.bridging.adopt_alias(hosted, "#nothing:hub.test") is None
    hub.matrix.aliases["#private:hub.test"] = "!private:hub.test"
    hub.matrix.closed.add("!private:hub.test")
    assert await hub.bridging.adopt_alias(hosted, "#private:hub.test") is None
    assert await hub.store.get_portal(hosted) is None and hub.matrix.state == []


# --- what each way in does ----------------------------------------------------------------------


async def test_the_bridge_command_makes_the_room_the_portal(hub: Hub) -> None:
    portal = await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", "one")
    assert (portal.mxid, portal.name) == ("!room:hub.test", "Chat one")
    assert await hub.chat_of("!room:hub.test") == "one"
    assert hub.portals.room_keys["!room:hub.test"] == portal.key
    assert hub.matrix.state == [("!room:hub.test", "m.bridge"),
                                ("!room:hub.test", "uk.half-shot.bridge")]  # fmt: skip
    assert [p.remote_id for p in await hub.store.list_portals_for_user(ALICE)] == ["one"]
    assert hub.network.asked == [("one", ALICE)]


async def test_an_alias_creates_the_portal_once_then_points_at_it(hub: Hub) -> None:
    portal = await hub.bridging.alias_query("#reference_team=40muc:hub.test")
    assert portal is not None and portal.remote_id == "team@muc"
    (created,) = hub.matrix.created
    assert created["alias_localpart"] == "reference_team=40muc"
    assert created["invite"] == ["@reference_bob:hub.test"]  # the chat's members, invited
    assert await hub.room_of("team@muc") == portal.mxid
    assert hub.network.asked == [("team@muc", "")]  # no Matrix user behind an alias query

    again = await hub.bridging.alias_query("#reference_team=40muc:hub.test")
    assert again is not None and again.mxid == portal.mxid
    assert len(hub.matrix.created) == 1
    assert hub.matrix.added_aliases == [(portal.mxid, "reference_team=40muc")]


async def test_an_alias_for_a_chat_bridged_by_command_leads_to_that_room(hub: Hub) -> None:
    await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", "one")
    portal = await hub.bridging.alias_query("#reference_one:hub.test")
    assert portal is not None and portal.mxid == "!room:hub.test"
    assert hub.matrix.created == []


async def test_a_hosted_room_is_joined_and_adopted_and_follows_its_alias(hub: Hub) -> None:
    hosted = PortalKey(NET, RemoteChatID("lobby@rooms"))
    hub.matrix.aliases["#lobby:hub.test"] = "!lobby:hub.test"
    portal = await hub.bridging.adopt_alias(hosted, "#lobby:hub.test")
    assert portal is not None and (portal.mxid, portal.name) == ("!lobby:hub.test", "Lobby")
    assert hub.matrix.joins == ["!lobby:hub.test"]
    again = await hub.bridging.adopt_alias(hosted, "#lobby:hub.test")
    assert again is not None and again.mxid == "!lobby:hub.test"
    assert hub.matrix.joins == ["!lobby:hub.test"]  # already there: no second join

    hub.matrix.aliases["#lobby:hub.test"] = "!new-lobby:hub.test"  # its admins moved the alias
    moved = await hub.bridging.adopt_alias(hosted, "#lobby:hub.test")
    assert moved is not None and moved.mxid == "!new-lobby:hub.test"
    assert await hub.store.get_portal_by_mxid("!lobby:hub.test") is None
    assert "!lobby:hub.test" not in hub.portals.room_keys


class PolicyConnector(Connector):
    """A network whose chat ids name no domain (a Teams channel link): it checks the policy
    itself once it knows the chat's tenant."""

    async def policy_domain(self, portal: PortalKey) -> str:
        return "tenant.example"


async def test_a_link_that_names_no_domain_is_checked_by_its_network_not_as_a_domain(
    store: Store,
) -> None:
    """Rules that let only one tenant's people in: a chat id that is a link (``https://…``)
    is no domain, so the core leaves the check to the network that knows the tenant instead
    of refusing every link as coming from ``https:``. A network whose ids name their domain is
    still checked by the core."""
    rules = [{"network": "*", "remote": ["tenant.example", "muc"], "matrix": ["*"]}]
    hub = Hub(store, rules)
    link = "https://teams.example/l/channel/one"
    hub.network.chats.add(link)
    with pytest.raises(Refused):
        await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", link)
    assert hub.network.asked == []
    hub.bridging._connectors[NET] = PolicyConnector("reference", "Reference")  # type: ignore[index]
    portal = await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", link)
    assert portal.mxid == "!room:hub.test" and hub.network.asked == [(link, ALICE)]
