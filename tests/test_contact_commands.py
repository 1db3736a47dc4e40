"""``<network> contacts <room> list|add|remove <id>`` (bridge.core.contact_commands), refusals
first: someone not in the room, a room that is not a portal of that network, bad usage and ids
the connector refuses all change nothing, and the first two get the same answer (whose rooms are
bridged does not leak). Real store, portal manager and router (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
from unittest.mock import AsyncMock

import pytest

from bridge.core.commands import CommandProcessor
from bridge.core.connector import Contact, NetworkInfo, SupportsContacts
from bridge.core.errors import PermanentError
from bridge.core.ids import PortalKey, RemoteUserID
from bridge.core.permissions import Permissions
from bridge.portal.models import BridgeUser
from bridge.portal.store import Store
from tests.test_permissions import ALICE, KEY, NET, ROOM, RULES, Hub

BOB, ADMIN = "@bob:hub.test", "@admin:hub.test"
ALICE_DM = "!alice-dm:hub.test"


class ContactsConnector:
    info = NetworkInfo(id=NET, display_name="Email")

    def __init__(self) -> None:
        self.contacts: dict[PortalKey, list[str]] = {}

    async def list_contacts(self, portal: PortalKey) -> list[Contact]:
        return [Contact(RemoteUserID(c), stopped="bounced" if c.startswith("x") else None)
                for c in self.contacts.get(portal, [])]  # fmt: skip

    async def add_contact(self, portal: PortalKey, remote_id: str) -> Contact:
        if "@" not in remote_id:
            raise PermanentError("bad", user_message=f"{remote_id} is not a mail address.")
        self.contacts.setdefault(portal, []).append(remote_id)
        return Contact(RemoteUserID(remote_id))

    async def remove_contact(self, portal: PortalKey, remote_id: str) -> bool:
        known = self.contacts.get(portal, [])
        if remote_id not in known:
            return False
        known.remove(remote_id)
        return True


class Bot:
    def __init__(self, store: Store) -> None:
        self.hub = Hub(store, relay_enabled=False)
        self.connector = ContactsConnector()
        assert isinstance(self.connector, SupportsContacts)
        self.commands = CommandProcessor(
            store=store, matrix=self.hub.matrix, router=self.hub.router,  # type: ignore[arg-type]
            connectors={NET: self.connector},  # type: ignore[dict-item]
            permissions=Permissions({**RULES, ADMIN: "admin"}, relay_enabled=False),
            prefix="!pontis", load_login=AsyncMock(), log=logging.getLogger("test.contacts"),
        )  # fmt: skip

    async def say(self, sender: str, text: str, room: str = ALICE_DM) -> str:
        before = len(self.hub.matrix.sent)
        event = {"type": "m.room.message", "event_id": "$cmd", "sender": sender,
                 "content": {"msgtype": "m.text", "body": text}}  # fmt: skip
        await self.commands.handle(room, sender, event)
        ((_, reply),) = self.hub.matrix.sent[before:]
        return reply


@pytest.fixture
async def bot(store: Store) -> Bot:
    await store.save_user(BridgeUser(mxid=ALICE, management_room=ALICE_DM))
    bot = Bot(store)
    await bot.hub.portal(relay=False)
    bot.hub.matrix.members = {ALICE: "Alice"}  # Bob is a user of the hub, not in the room
    return bot


async def test_someone_not_in_the_room_is_told_it_is_not_bridged(bot: Bot) -> None:
    not_in = await bot.say(BOB, f"!pontis mail contacts {ROOM} add eve@evil.test", "!bob:hub.test")
    unknown = await bot.say(BOB, "!pontis mail contacts !nope:hub.test list", "!bob:hub.test")
    assert not_in == unknown.replace("!nope:hub.test", ROOM)
    assert "not bridged" in not_in
    assert bot.connector.contacts == {}


@pytest.mark.parametrize("command", [
    "mail", "mail contacts", f"mail contacts {ROOM}", f"mail contacts {ROOM} add",
    f"mail contacts {ROOM} list extra", f"mail contacts {ROOM} wipe a@b.test",
    f"mail contacts {ROOM} add a@b.test c@d.test", f"mail members {ROOM} list",
])  # fmt: skip
async def test_bad_usage_gets_the_usage_and_changes_nothing(bot: Bot, command: str) -> None:
    assert (await bot.say(ALICE, command)).startswith("Usage: `mail contacts <room>")
    assert bot.connector.contacts == {}


async def test_an_id_the_network_refuses_is_explained(bot: Bot) -> None:
    assert await bot.say(ALICE, f"mail contacts {ROOM} add nobody") == (
        "nobody is not a mail address."
    )
    assert bot.connector.contacts == {}


async def test_a_member_adds_lists_and_removes_and_it_is_audited(bot: Bot, store: Store) -> None:
    reply = await bot.say(ALICE, "mail contacts #team:hub.test add dana@partner.test")
    assert "`dana@partner.test` now receives" in reply
    await bot.say(ALICE, f"mail contacts {ROOM} add xavier@gone.test")
    listed = await bot.say(ALICE, f"mail contacts {ROOM} list")
    assert "`dana@partner.test`" in listed and "`xavier@gone.test` — stopped: bounced" in listed
    assert "no longer receives" in await bot.say(
        ALICE, f"mail contacts {ROOM} remove dana@partner.test"
    )
    assert "is not a contact" in await bot.say(
        ALICE, f"mail contacts {ROOM} remove dana@partner.test"
    )
    assert bot.connector.contacts == {KEY: ["xavier@gone.test"]}
    rows = await store.database.fetch("SELECT actor, action, detail FROM audit ORDER BY id")
    assert [(r["actor"], r["action"], r["detail"]) for r in rows] == [
        (ALICE, "add-contact", "dana@partner.test"),
        (ALICE, "add-contact", "xavier@gone.test"),
        (ALICE, "remove-contact", "dana@partner.test"),
    ]


async def test_an_admin_manages_contacts_without_being_in_the_room(bot: Bot, store: Store) -> None:
    await store.save_user(BridgeUser(mxid=ADMIN, management_room="!admin-dm:hub.test"))
    reply = await bot.say(
        ADMIN, f"mail contacts {ROOM} add dana@partner.test", "!admin-dm:hub.test"
    )
    assert "now receives" in reply and bot.connector.contacts == {KEY: ["dana@partner.test"]}
