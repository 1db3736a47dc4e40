"""Permission levels that mean something (bridge.core.permissions), tried as a stranger would.

The store is real (SQLite and PostgreSQL) and so are the router, the portal manager and the
Matrix event handler; the homeserver records what the bridge asked of it, and the network is a
client that records what reached it. The e2e tests run the same refusals against Synapse
(tests/e2e/test_permissions.py).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bridge.core.connector import NetworkInfo
from bridge.core.errors import PermanentError
from bridge.core.events import ChatInfo, MatrixMessage, UserInfo
from bridge.core.federation import FederationPolicy
from bridge.core.ids import LoginID, NetworkID, PortalKey, RemoteChatID, RemoteMessageID
from bridge.core.metrics import Metrics
from bridge.core.permissions import (
    RELAY_OFF_IN_CONFIG,
    RELAY_OFF_IN_PORTAL,
    Permissions,
    may_send_state,
    privileged_creators,
)
from bridge.core.portals import PortalManager
from bridge.core.retry import RetryPolicy
from bridge.core.router import Router
from bridge.portal.models import InboxRow, Portal
from bridge.portal.store import Store

NET = NetworkID("mail")
KEY = PortalKey(NET, RemoteChatID("team@bridge.test"))
ROOM = "!portal:hub.test"
ALICE, OUTSIDER, BOT = "@alice:hub.test", "@outsider:elsewhere.test", "@pontis:hub.test"
RULES = {"hub.test": "user", "*": "relay"}
OPEN = [{"network": "*", "remote": ["*"], "matrix": ["*"]}]  # only permissions decide here


class Homeserver:
    bot_mxid = BOT
    encryption = None

    def __init__(self) -> None:
        self.left: list[tuple[str, str, str]] = []
        self.joined: list[tuple[str, str]] = []
        self.sent: list[tuple[str, str]] = []
        self.state = []
        self.members = {}
        self.created: list[dict[str, Any]] = []
        self.invited: list[tuple[str, str]] = []

    async def update_state_cache(self, event: dict[str, Any]) -> None:
        pass

    async def get_displayname(self, room_id: str, mxid: str) -> str:
        return {ALICE: "Alice", OUTSIDER: "Otto <b>", BOT: "Pontis"}.get(mxid, mxid)

    async def leave(self, room_id: str, reason: str = "", *, mxid: str | None = None) -> None:
        self.left.append((room_id, mxid or BOT, reason))

    async def join(self, room_id: str, *, mxid: str | None = None) -> None:
        self.joined.append((room_id, mxid or BOT))

    async def send(self, sender: str, room_id: str, content: dict[str, Any], **_: Any) -> str:
        self.sent.append((room_id, content["body"]))
        return "$notice"

    async def ensure_registered(self, mxid: str) -> None:
        pass

    # for the commands (tests/test_portal_commands.py)
    levels: dict[str, Any] = {"users": {ALICE: 100}, "state_default": 50}
    members: dict[str, str] = {}
    creators: list[str] = []
    state: list[tuple[str, str, dict[str, Any]]] = []

    async def power_levels(self, room_id: str) -> tuple[dict[str, Any], list[str]]:
        return self.levels, self.creators

    async def set_state(self, sender: str, room_id: str, event_type: str, content: Any,
                        state_key: str = "") -> None:  # fmt: skip
        self.state.append((room_id, event_type, content))

    async def resolve_alias(self, alias: str) -> str | None:
        return ROOM if alias == "#team:hub.test" else None

    async def joined_members(self, room_id: str) -> dict[str, str]:
        return self.members

    async def room_encrypted(self, room_id: str) -> bool:
        return False

    async def create_room(self, **kwargs: Any) -> str:
        self.created.append(kwargs)
        return f"!dm{len(self.created)}:hub.test"

    async def ensure_joined(self, mxid: str, room_id: str) -> None:
        self.joined.append((room_id, mxid))

    async def invite(self, room_id: str, mxid: str, **_: Any) -> None:
        self.invited.append((room_id, mxid))

    async def set_profile(self, mxid: str, **_: Any) -> None:
        pass


class MailClient:
    """The shared client of a network whose chats take new recipients by invite (email)."""

    login_id = LoginID("")

    def __init__(self) -> None:
        self.messages: list[MatrixMessage] = []
        self.recipients: list[str] = []

    async def handle_matrix_message(self, msg: MatrixMessage) -> RemoteMessageID:
        self.messages.append(msg)
        return RemoteMessageID(f"<{len(self.messages)}@bridge.test>")

    async def handle_matrix_invite(self, portal: Portal, inviter: str, user: str) -> None:
        self.recipients.append(user)

    async def start_direct_chat(self, user: str, matrix_user: str) -> PortalKey:
        return PortalKey(NET, RemoteChatID(f"dm-{user}"))

    async def get_chat_info(self, portal: PortalKey) -> ChatInfo:
        return ChatInfo(name="Team")

    async def get_user_info(self, user: str) -> UserInfo:
        return UserInfo(name=user)


class Connector:
    info = NetworkInfo(id=NET, display_name="Email")

    def capabilities(self) -> Any:
        from bridge.core.connector import Capabilities

        return Capabilities(replies=True, media=True, html=True)


class MarkingConnector(Connector):
    """A connector that says who a relayed message is from itself (Teams' marker line)."""

    marks_relayed_senders = True


class Hub:
    def __init__(self, store: Store, *, relay_enabled: bool, marks: bool = False) -> None:
        self.store = store
        self.matrix = Homeserver()
        self.client = MailClient()
        matrix: Any = self.matrix
        connectors: Any = {NET: MarkingConnector() if marks else Connector()}
        log = logging.getLogger("test.permissions")
        self.portals = PortalManager(
            store=store, matrix=matrix, domain="hub.test", bridge_id="pontis",
            networks={NET: Connector.info}, log=log,
        )  # fmt: skip
        self.router = Router(
            store=store, matrix=matrix, portals=self.portals, connectors=connectors,
            permissions=Permissions(RULES, relay_enabled=relay_enabled), metrics=Metrics(),
            retry=RetryPolicy(attempts=1, backoff=0), queue_size=10, domain="hub.test", log=log,
            federation=FederationPolicy(OPEN, "hub.test"),
        )  # fmt: skip
        self.router.add_client(NET, self.client)  # type: ignore[arg-type]
        self._ids = 0

    async def portal(self, *, relay: bool) -> Portal:
        portal = Portal(NET, KEY.remote_id, mxid=ROOM, relay_login=LoginID("") if relay else None)
        await self.portals.save_portal(portal)
        return portal

    async def event(self, sender: str, event_type: str, content: dict[str, Any],
                    **extra: Any) -> None:  # fmt: skip
        self._ids += 1
        payload = {"type": event_type, "sender": sender, "room_id": ROOM, "content": content,
                   "event_id": f"$e{self._ids}", "origin_server_ts": 1, **extra}  # fmt: skip
        row = InboxRow(self._ids, "t", "pdu", f"$e{self._ids}", ROOM, payload, 0)
        await self.router._handle_inbox_row(row)


def _text(body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body}


# --- relay mode: hostile first ---------------------------------------------------------------


@pytest.mark.parametrize(("in_config", "in_portal", "reason"), [
    (False, False, RELAY_OFF_IN_CONFIG),
    (False, True, RELAY_OFF_IN_CONFIG),  # a portal's flag cannot turn on what the config forbids
    (True, False, RELAY_OFF_IN_PORTAL),
])  # fmt: skip
async def test_a_relay_level_message_is_not_delivered_unless_relay_is_on_in_both(
    store: Store, in_config: bool, in_portal: bool, reason: str
) -> None:
    hub = Hub(store, relay_enabled=in_config)
    await hub.portal(relay=in_portal)
    with pytest.raises(PermanentError) as refused:
        await hub.event(OUTSIDER, "m.room.message", _text("leak this"))
    assert refused.value.user_message == reason
    assert hub.client.messages == []  # nothing reached the network
    assert await store.get_message_by_mxid("$e1") is None


async def test_a_relay_level_message_is_relayed_by_the_bot_with_the_name_in_front(
    store: Store,
) -> None:
    hub = Hub(store, relay_enabled=True)
    await hub.portal(relay=True)
    await hub.event(OUTSIDER, "m.room.message", {
        "msgtype": "m.text", "body": "hello", "format": "org.matrix.custom.html",
        "formatted_body": "<i>hello</i>",
    })  # fmt: skip
    (msg,) = hub.client.messages
    assert (msg.sender, msg.sender_name) == (BOT, "Pontis")  # not the outsider's own identity
    assert msg.relayed  # so a connector does not put the bot's name in front as well
    assert msg.body == "Otto <b>: hello"
    assert msg.html == "<b>Otto &lt;b&gt;</b>: <i>hello</i>"  # the name cannot inject markup
    await hub.event(OUTSIDER, "m.room.message", {"msgtype": "m.emote", "body": "waves"})
    assert (hub.client.messages[1].msgtype, hub.client.messages[1].body) == (
        "m.text", "* Otto <b> waves"
    )  # fmt: skip


async def test_a_relayed_message_keeps_who_wrote_it_for_a_connector_that_marks_it(
    store: Store,
) -> None:
    hub = Hub(store, relay_enabled=True, marks=True)
    await hub.portal(relay=True)
    await hub.event(OUTSIDER, "m.room.message", {
        "msgtype": "m.text", "body": "hello", "format": "org.matrix.custom.html",
        "formatted_body": "<i>hello</i>",
    })  # fmt: skip
    (msg,) = hub.client.messages
    assert (msg.sender, msg.relayed) == (BOT, True)
    assert (msg.relayed_sender, msg.relayed_sender_name) == (OUTSIDER, "Otto <b>")
    assert (msg.body, msg.html) == ("hello", "<i>hello</i>")  # no second name in front


async def test_a_relay_level_reaction_is_not_shown_on_the_network(store: Store) -> None:
    hub = Hub(store, relay_enabled=True)
    await hub.portal(relay=True)
    await hub.event(OUTSIDER, "m.room.message", _text("hello"))
    relates = {"rel_type": "m.annotation", "event_id": "$e1", "key": "👍"}
    await hub.event(OUTSIDER, "m.reaction", {"m.relates_to": relates})
    assert len(hub.client.messages) == 1
    assert await store.get_reaction_by_mxid("$e2") is None


async def test_a_user_level_message_is_sent_as_themselves_whatever_the_relay(
    store: Store,
) -> None:
    hub = Hub(store, relay_enabled=False)
    await hub.portal(relay=False)
    await hub.event(ALICE, "m.room.message", _text("hi"))
    (msg,) = hub.client.messages
    assert (msg.sender, msg.body) == (ALICE, "hi") and not msg.relayed


# --- adding people to a chat (mail recipients) ---------------------------------------------------


async def test_a_relay_level_user_cannot_add_mail_recipients(store: Store) -> None:
    hub = Hub(store, relay_enabled=True)
    await hub.portal(relay=True)  # even with relay on: relaying is not inviting
    ghost = "@mail_mallory=40evil.test:hub.test"
    invite = {"membership": "invite"}
    await hub.event(OUTSIDER, "m.room.member", invite, state_key=ghost)
    assert hub.client.recipients == []
    ((room, who, reason),) = hub.matrix.left
    assert (room, who) == (ROOM, ghost)  # the ghost rejects the invite, saying why
    assert "`user` level" in reason
    assert hub.matrix.joined == []

    await hub.event(ALICE, "m.room.member", invite, state_key=ghost)
    assert hub.client.recipients == ["mallory@evil.test"]


# --- power levels --------------------------------------------------------------------------------


@pytest.mark.parametrize(("levels", "allowed"), [
    ({"users": {ALICE: 100}}, True),
    ({"users": {ALICE: 50}, "state_default": 50}, True),
    ({"users": {ALICE: 49}, "state_default": 50}, False),
    ({"users_default": 0}, False),  # state_default is 50 when absent
    ({"users": {ALICE: 50}, "events": {"m.bridge": 100}}, False),
    ({"users": {ALICE: 10}, "events": {"m.bridge": 0}, "state_default": 50}, True),
    ({"users": {ALICE: "100"}}, True),  # old room versions allow strings
    ({"users": {ALICE: "lots"}}, False),
    ({"users": [ALICE]}, False),
    ({"users": {ALICE: 100}, "events": "all"}, False),
])  # fmt: skip
def test_the_power_to_send_bridge_state(levels: dict[str, Any], allowed: bool) -> None:
    assert may_send_state(levels, ALICE, "m.bridge") is allowed


@pytest.mark.parametrize(("create", "creators"), [
    ({"room_version": "10"}, []),  # older rooms: the creator is in the power levels like anyone
    ({}, []),
    ({"room_version": "12"}, [ALICE]),
    ({"room_version": "org.matrix.hydra.11"}, [ALICE]),
    ({"room_version": "12", "additional_creators": ["@bob:hub.test", 7]}, [ALICE, "@bob:hub.test"]),
    ({"room_version": "12", "additional_creators": "@bob:hub.test"}, [ALICE]),
])  # fmt: skip
def test_creators_of_newer_rooms_have_all_power(
    create: dict[str, Any], creators: list[str]
) -> None:
    assert privileged_creators(create, ALICE) == creators
    levels = {"users": {"@mod:hub.test": 50}, "state_default": 50}  # a v12 room: Alice not listed
    assert may_send_state(levels, ALICE, "m.bridge", creators) is bool(creators)
    assert not may_send_state(levels, OUTSIDER, "m.bridge", creators)


def test_levels_by_mxid_then_server_then_everyone() -> None:
    permissions = Permissions({"*": "relay", "hub.test": "user", "@boss:hub.test": "admin"})
    assert permissions.level("@boss:hub.test") == Permissions.ADMIN
    assert permissions.level(ALICE) == Permissions.USER
    assert permissions.relay_only(OUTSIDER) and not permissions.relay_only(ALICE)
    assert Permissions({}).level(ALICE) == Permissions.NONE


async def test_a_relay_level_users_other_events_are_quietly_ignored(store: Store) -> None:
    hub = Hub(store, relay_enabled=False)
    await hub.portal(relay=False)
    await hub.event(OUTSIDER, "m.room.topic", {"topic": "mine now"}, state_key="")
    await hub.event(OUTSIDER, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation",
                                                               "event_id": "$x", "key": "👍"}})  # fmt: skip
    assert hub.client.messages == [] and hub.matrix.sent == []  # no notice either
