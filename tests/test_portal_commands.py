"""Management commands about portals, relay mode, logins and chats (bridge.core.portal_commands),
refusals first. The router, the portal manager and the store are real (SQLite and PostgreSQL);
the homeserver and the network are the recorders of tests/test_permissions.py."""

from __future__ import annotations

import logging
from unittest.mock import AsyncMock

import pytest

from bridge.core.commands import CommandProcessor
from bridge.core.ids import LoginID, RemoteChatID
from bridge.core.permissions import Permissions
from bridge.portal.models import BridgeUser, Login, Portal
from bridge.portal.store import Store
from tests.test_permissions import ALICE, BOT, KEY, NET, OUTSIDER, ROOM, RULES, Hub

ADMIN = "@admin:hub.test"
ALICE_DM, ADMIN_DM, OTHER_ROOM = "!alice-dm:hub.test", "!admin-dm:hub.test", "!other:hub.test"


class Bot:
    def __init__(
        self, store: Store, *, relay_enabled: bool = True, permissions: Permissions | None = None
    ) -> None:
        self.hub = Hub(store, relay_enabled=relay_enabled)
        self.store = store
        self.commands = CommandProcessor(
            store=store, matrix=self.hub.matrix, router=self.hub.router,  # type: ignore[arg-type]
            connectors=self.hub.router._connectors,
            permissions=permissions
            or Permissions({**RULES, ADMIN: "admin"}, relay_enabled=relay_enabled),
            prefix="!pontis", load_login=AsyncMock(), log=logging.getLogger("test.commands"),
        )  # fmt: skip

    async def say(self, room_id: str, sender: str, text: str) -> str:
        before = len(self.hub.matrix.sent)
        event = {"type": "m.room.message", "event_id": "$cmd", "sender": sender,
                 "content": {"msgtype": "m.text", "body": text}}  # fmt: skip
        await self.commands.handle(room_id, sender, event)
        ((room, reply),) = self.hub.matrix.sent[before:]
        assert room == room_id
        return reply

    async def portal(self) -> Portal | None:
        return await self.store.get_portal(KEY)


@pytest.fixture
async def bot(store: Store) -> Bot:
    await store.save_user(BridgeUser(mxid=ALICE, management_room=ALICE_DM))
    await store.save_user(BridgeUser(mxid=ADMIN, management_room=ADMIN_DM))
    bot = Bot(store)
    await bot.hub.portal(relay=False)
    await store.add_portal_user(ALICE, KEY)
    return bot


# --- refusals: each changes nothing ----------------------------------------------------------


@pytest.mark.parametrize("command", ["delete-portal #team:hub.test", "list-portals all",
                                     "list-logins all", "Delete-Portal !portal:hub.test"])  # fmt: skip
async def test_a_user_is_told_admin_commands_are_for_admins(bot: Bot, command: str) -> None:
    reply = await bot.say(ALICE_DM, ALICE, command)
    assert reply.startswith("Only bridge admins may use `") and "`admin` level" in reply
    assert (await bot.portal()) is not None
    assert bot.hub.matrix.left == []


@pytest.mark.parametrize("command", ["set-relay #team:hub.test", "unbridge #team:hub.test",
                                     "list-portals", "start-chat mail bob@agency.test"])  # fmt: skip
async def test_a_relay_level_user_may_use_no_command(bot: Bot, command: str) -> None:
    reply = await bot.say(OTHER_ROOM, OUTSIDER, f"!pontis {command}")
    assert "not open to" in reply and OUTSIDER in reply
    portal = await bot.portal()
    assert portal is not None and portal.relay_login is None and portal.mxid == ROOM
    assert bot.hub.matrix.created == []


@pytest.mark.parametrize("command", ["set-relay", "unset-relay", "unbridge"])
async def test_room_commands_need_the_power_level_in_that_room(bot: Bot, command: str) -> None:
    bot.hub.matrix.levels = {"users": {ADMIN: 100}, "state_default": 50}  # Alice: 0
    await bot.say(ADMIN_DM, ADMIN, "set-relay #team:hub.test")
    reply = await bot.say(ALICE_DM, ALICE, f"{command} #team:hub.test")
    assert "power level" in reply
    portal = await bot.portal()
    assert portal is not None and portal.mxid == ROOM and portal.relay_login == LoginID("")


async def test_set_relay_is_refused_while_the_config_turns_relay_off(store: Store) -> None:
    bot = Bot(store, relay_enabled=False)
    await bot.hub.portal(relay=False)
    reply = await bot.say(OTHER_ROOM, ALICE, "!pontis set-relay #team:hub.test")
    assert "bridge.relay.enabled" in reply
    portal = await bot.portal()
    assert portal is not None and portal.relay_login is None


@pytest.mark.parametrize("target", ["", "team", "#nowhere:hub.test", "!notaportal:hub.test",
                                    "#team:hub.test extra"])  # fmt: skip
async def test_a_room_that_is_no_portal_is_named_as_such(bot: Bot, target: str) -> None:
    reply = await bot.say(ALICE_DM, ALICE, f"set-relay {target}")
    assert reply.startswith("Usage: `set-relay <room>`") or reply.endswith("is not bridged.")
    portal = await bot.portal()
    assert portal is not None and portal.relay_login is None


async def test_a_management_room_is_not_moved_into_a_shared_room(bot: Bot, store: Store) -> None:
    bot.hub.matrix.members = {ALICE: "Alice", BOT: "Pontis", "@eve:hub.test": "Eve"}
    reply = await bot.say(OTHER_ROOM, ALICE, "!pontis set-management-room")
    assert "other members" in reply
    user = await store.get_user(ALICE)
    assert user is not None and user.management_room == ALICE_DM


# --- what each command does --------------------------------------------------------------------


async def test_relay_mode_on_and_off_and_what_it_does(bot: Bot) -> None:
    reply = await bot.say(ALICE_DM, ALICE, "set-relay #team:hub.test")
    assert reply.startswith(f"Relay mode is on in {ROOM}")
    await bot.hub.event(OUTSIDER, "m.room.message", {"msgtype": "m.text", "body": "hi"})
    assert [m.body for m in bot.hub.client.messages] == ["Otto <b>: hi"]
    assert "relay on" in await bot.say(ALICE_DM, ALICE, "list-portals")
    assert await bot.say(ALICE_DM, ALICE, f"unset-relay {ROOM}") == f"Relay mode is off in {ROOM}."
    portal = await bot.portal()
    assert portal is not None and portal.relay_login is None


async def test_set_relay_uses_the_users_own_login_if_they_have_one(bot: Bot, store: Store) -> None:
    await store.save_login(Login(NET, LoginID("alice@agency.test"), ALICE, "Alice A."))
    assert "your login Alice A." in await bot.say(ALICE_DM, ALICE, "set-relay #team:hub.test")
    portal = await bot.portal()
    assert portal is not None and portal.relay_login == "alice@agency.test"


async def test_unbridge_forgets_the_portal_and_keeps_the_room(bot: Bot) -> None:
    reply = await bot.say(ALICE_DM, ALICE, "unbridge #team:hub.test")
    assert reply == f"{ROOM} is no longer bridged to mail `{KEY.remote_id}`."
    assert await bot.portal() is None
    assert bot.hub.matrix.left == []  # the room stays, with the bot in it
    assert [(r, t) for r, t, _ in bot.hub.matrix.state] == [(ROOM, "m.bridge"),
                                                            (ROOM, "uk.half-shot.bridge")]  # fmt: skip


async def test_list_portals_mine_or_all_for_admins(bot: Bot, store: Store) -> None:
    await store.save_portal(Portal(NET, RemoteChatID("other@x"), mxid="!o:hub.test"))
    mine = await bot.say(ALICE_DM, ALICE, "list-portals")
    assert mine.startswith("**Portals** (1)") and ROOM in mine and "!o:hub.test" not in mine
    every = await bot.say(ADMIN_DM, ADMIN, "list-portals all")
    assert every.startswith("**Portals** (2)") and "!o:hub.test" in every
    assert await bot.say(ADMIN_DM, ADMIN, "list-portals") == "No portals."


async def test_an_admin_deletes_a_portal_and_the_bridge_leaves(bot: Bot) -> None:
    ghost = "@mail_bob=40agency.test:hub.test"
    bot.hub.matrix.members = {ALICE: "Alice", BOT: "Pontis", ghost: "Bob"}
    reply = await bot.say(ADMIN_DM, ADMIN, "delete-portal #team:hub.test")
    assert reply.startswith("Deleted the portal of mail")
    assert await bot.portal() is None
    assert [(room, who) for room, who, _ in bot.hub.matrix.left] == [(ROOM, ghost), (ROOM, BOT)]


async def test_list_logins(bot: Bot, store: Store) -> None:
    assert await bot.say(ALICE_DM, ALICE, "list-logins") == "No logins."
    await store.save_login(Login(NET, LoginID("alice@agency.test"), ALICE, "Alice A."))
    assert await bot.say(ALICE_DM, ALICE, "list-logins") == (
        "**Logins**\n- mail: Alice A. (not loaded)"
    )
    every = await bot.say(ADMIN_DM, ADMIN, "list-logins all")
    assert f"Alice A. of {ALICE}" in every


async def test_start_chat_creates_a_direct_portal_and_invites_the_user(bot: Bot) -> None:
    reply = await bot.say(ALICE_DM, ALICE, "start-chat mail bob@agency.test")
    assert reply == "Started a chat with `bob@agency.test`: !dm1:hub.test (invited)."
    (created,) = bot.hub.matrix.created
    assert created["is_direct"] is True and ALICE in created["invite"]
    again = await bot.say(ALICE_DM, ALICE, "start-chat mail bob@agency.test")
    assert again == "You already have that chat: !dm1:hub.test (invited)."
    assert len(bot.hub.matrix.created) == 1
    assert "Usage" in await bot.say(ALICE_DM, ALICE, "start-chat mail")
    assert "no network `nope`" in await bot.say(ALICE_DM, ALICE, "start-chat nope x")


async def test_search_says_when_a_network_cannot_be_searched(bot: Bot) -> None:
    reply = await bot.say(ALICE_DM, ALICE, "search mail bob")
    assert reply.startswith("Email cannot be searched")


async def test_set_management_room(bot: Bot, store: Store) -> None:
    bot.hub.matrix.members = {ALICE: "Alice", BOT: "Pontis"}
    assert await bot.say(OTHER_ROOM, ALICE, "!pontis set-management-room") == (
        "This is now your management room."
    )
    user = await store.get_user(ALICE)
    assert user is not None and user.management_room == OTHER_ROOM


async def test_help_describes_every_command(bot: Bot) -> None:
    text = await bot.say(ALICE_DM, ALICE, "help")
    for command in ("list-logins", "relogin", "logout", "search", "start-chat", "list-portals",
                    "delete-portal", "unbridge", "set-relay", "unset-relay",
                    "set-management-room", "sync", "dead-letters"):  # fmt: skip
        assert f"`{command}" in text, command
    assert "Bridge admins only" in text


async def test_sync_fetches_the_chat_again_for_the_rooms_members(bot: Bot) -> None:
    bot.hub.matrix.members = {ALICE: "Alice", BOT: "Pontis"}
    stranger = "@bob:hub.test"  # the user level, but not in the room
    await bot.store.save_user(BridgeUser(mxid=stranger, management_room="!bob-dm:hub.test"))
    assert await bot.say("!bob-dm:hub.test", stranger, f"sync {ROOM}") == f"You are not in {ROOM}."
    assert bot.hub.matrix.state == []
    reply = await bot.say(ALICE_DM, ALICE, "sync #team:hub.test")
    assert reply == f"Synced {ROOM} with mail `{KEY.remote_id}`."
    assert (ROOM, "m.room.name", {"name": "Team"}) in bot.hub.matrix.state
    portal = await bot.portal()
    assert portal is not None and portal.name == "Team"
