"""Agencies (bridge.core.agencies): who belongs where, and what an agency admin may manage. The
command tests use the real command processor, router and store (SQLite and PostgreSQL) with the
recorders of tests/test_permissions.py for the homeserver and the network."""

from __future__ import annotations

import pytest

from bridge.core.agencies import check_agencies, parse_agencies
from bridge.core.ids import LoginID, PortalKey, RemoteChatID
from bridge.core.permissions import Permissions
from bridge.portal.audit import AuditStore
from bridge.portal.models import BridgeUser, Login, Portal, RemoteInput
from bridge.portal.store import Store
from tests.test_permissions import ALICE, KEY, NET, ROOM, RULES
from tests.test_portal_commands import Bot

FIN_ADMIN, HEALTH_ADMIN = "@it-finance:hub.test", "@it-health:hub.test"
CAROL = "@carol:health.test"
FIN_DM, HEALTH_DM = "!fin-dm:hub.test", "!health-dm:hub.test"
HEALTH_KEY, HEALTH_ROOM = PortalKey(NET, RemoteChatID("ward@health.test")), "!ward:hub.test"
DOMAIN_KEY, DOMAIN_ROOM = PortalKey(NET, RemoteChatID("desk@finance.test")), "!desk:hub.test"
AGENCIES = {
    "finance": {"matrix": [ALICE], "admins": [FIN_ADMIN], "networks": {"mail": ["finance.test"]}},
    "health": {"matrix": ["health.test"], "admins": [HEALTH_ADMIN, "@nobody:elsewhere.test"]},
}


def permissions() -> Permissions:
    return Permissions(RULES, agencies=parse_agencies(AGENCIES))


# --- who belongs where -------------------------------------------------------------------------


def test_an_agency_admin_administers_their_agency_and_a_bridge_admin_everything() -> None:
    perms = Permissions({**RULES, "@root:hub.test": "admin"}, agencies=parse_agencies(AGENCIES))
    assert perms.admin_scope("@root:hub.test").everything
    finance = perms.admin_scope(FIN_ADMIN)
    assert [a.name for a in finance.agencies] == ["finance"] and not finance.everything
    assert not perms.admin_scope(ALICE)  # a member is not an admin
    # Listed as an admin, but not allowed to use the bridge at all: administers nothing.
    assert not perms.admin_scope("@nobody:elsewhere.test")


def test_a_portal_belongs_by_its_users_its_login_or_its_remote_domain() -> None:
    finance = permissions().admin_scope(FIN_ADMIN)
    assert finance.covers_portal("mail", "x@else.test", [ALICE])
    assert finance.covers_portal("mail", "x@else.test", [], owner=ALICE)
    assert finance.covers_portal("mail", "desk@finance.test", [])
    assert not finance.covers_portal("xmpp", "desk@finance.test", [])  # mail domain only
    assert not finance.covers_portal("mail", "x@else.test", [CAROL])
    health = permissions().admin_scope(HEALTH_ADMIN)
    assert health.covers_portal("mail", "x@else.test", ["@dan:health.test"])
    assert not health.covers_portal("mail", "x@else.test", ["@dan:wealth.test"])


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ([], "bridge.agencies"),
        ({"a": []}, "bridge.agencies.a"),
        ({"a": {"members": []}}, "bridge.agencies.a.members"),
        ({"a": {"matrix": "hub.test"}}, "bridge.agencies.a.matrix"),
        ({"a": {"admins": ["it.hub.test"]}}, "bridge.agencies.a.admins"),
        ({"a": {"networks": {"mail": ["@x:y"]}}}, "bridge.agencies.a.networks.mail"),
        ({"a": {"networks": ["mail"]}}, "bridge.agencies.a.networks"),
    ],
)
def test_a_mistake_in_the_agencies_is_named_by_its_key(raw: object, where: str) -> None:
    problems = check_agencies(raw)
    assert problems and problems[0][0] == where, problems


def test_the_example_agencies_are_valid() -> None:
    assert check_agencies(AGENCIES) == [] and check_agencies({}) == []


# --- the commands, scoped ----------------------------------------------------------------------


async def _letter(store: Store, key: PortalKey, text: str) -> int:
    row = await store.remote_inbox.add(RemoteInput(key, "message", {"text": text}))
    assert row is not None
    return await store.remote_inbox.park(row, f"refused: {text}")


@pytest.fixture
async def bot(store: Store) -> Bot:
    for mxid, room in ((FIN_ADMIN, FIN_DM), (HEALTH_ADMIN, HEALTH_DM)):
        await store.save_user(BridgeUser(mxid=mxid, management_room=room))
    bot = Bot(store, relay_enabled=False, permissions=permissions())
    await bot.hub.portal(relay=False)  # finance: Alice is in it
    await store.add_portal_user(ALICE, KEY)
    await store.save_portal(Portal(NET, HEALTH_KEY.remote_id, mxid=HEALTH_ROOM))
    await store.add_portal_user(CAROL, HEALTH_KEY)
    await store.save_portal(Portal(NET, DOMAIN_KEY.remote_id, mxid=DOMAIN_ROOM))
    return bot


async def test_an_agency_admin_lists_only_their_agencys_portals(bot: Bot) -> None:
    finance = await bot.say(FIN_DM, FIN_ADMIN, "list-portals all")
    assert finance.startswith("**Portals** (2)"), finance
    assert ROOM in finance and DOMAIN_ROOM in finance and HEALTH_ROOM not in finance
    health = await bot.say(HEALTH_DM, HEALTH_ADMIN, "list-portals all")
    assert health.startswith("**Portals** (1)") and HEALTH_ROOM in health


async def test_an_agency_admin_deletes_their_portal_but_not_another_agencys(
    bot: Bot, store: Store
) -> None:
    refused = await bot.say(FIN_DM, FIN_ADMIN, f"delete-portal {HEALTH_ROOM}")
    assert refused == f"{HEALTH_ROOM} is not bridged."  # as if it were not there
    assert await store.get_portal(HEALTH_KEY) is not None and bot.hub.matrix.left == []
    deleted = await bot.say(FIN_DM, FIN_ADMIN, f"delete-portal {DOMAIN_ROOM}")
    assert deleted.startswith("Deleted the portal of mail `desk@finance.test`")
    assert await store.get_portal(DOMAIN_KEY) is None
    audit = [(e.actor, e.action, e.outcome) for e in await AuditStore(store.database).newest()]
    assert (FIN_ADMIN, "delete-portal", "refused") in audit
    assert (FIN_ADMIN, "delete-portal", "ok") in audit


async def test_a_portal_shared_with_another_agency_is_not_one_agencys_to_delete(
    bot: Bot, store: Store
) -> None:
    """Carol (health) joined finance's portal: the finance admin still sees it, but deleting it
    would cut health off too; a bridge admin may."""
    await store.add_portal_user(CAROL, KEY)
    listing = await bot.say(FIN_DM, FIN_ADMIN, "list-portals all")
    assert ROOM in listing
    refused = await bot.say(FIN_DM, FIN_ADMIN, f"delete-portal {ROOM}")
    assert "shared with health" in refused and "bridge admin" in refused, refused
    assert await store.get_portal(KEY) is not None and bot.hub.matrix.left == []
    audit = [
        (e.actor, e.action, e.outcome, e.detail) for e in await AuditStore(store.database).newest()
    ]
    assert (FIN_ADMIN, "delete-portal", "refused", "shared with health") in audit


async def test_an_agency_admin_sees_retries_and_drops_only_their_dead_letters(
    bot: Bot, store: Store
) -> None:
    mine = await _letter(store, KEY, "finance one")
    theirs = await _letter(store, HEALTH_KEY, "health one")
    listing = await bot.say(FIN_DM, FIN_ADMIN, "dead-letters")
    assert "(1)" in listing and "finance one" in listing and "health one" not in listing
    assert "no dead letter" in (await bot.say(FIN_DM, FIN_ADMIN, f"retry {theirs}")).lower()
    assert "no dead letter" in (await bot.say(FIN_DM, FIN_ADMIN, f"drop {theirs}")).lower()
    assert await bot.say(FIN_DM, FIN_ADMIN, "drop all") == "Dropped 1 dead letter."
    assert [letter.id for letter in await store.dead_letters.newest()] == [theirs]
    assert mine != theirs


async def test_an_agency_admin_lists_their_agencys_logins(bot: Bot, store: Store) -> None:
    await store.save_login(Login(NET, LoginID("alice@else.test"), ALICE, "Alice"))
    await store.save_login(Login(NET, LoginID("carol@health.test"), CAROL, "Carol"))
    await store.save_login(Login(NET, LoginID("desk@finance.test"), "@bob:hub.test", "Desk"))
    # A name its owner chose proves nothing: a display name that looks like finance's domain.
    await store.save_login(Login(NET, LoginID("eve@else.test"), "@eve:else.test", "x@finance.test"))
    finance = await bot.say(FIN_DM, FIN_ADMIN, "list-logins all")
    assert "Alice" in finance and "Desk" in finance and "Carol" not in finance
    assert "eve" not in finance and "x@finance.test" not in finance


async def test_a_member_of_an_agency_is_no_admin_of_it(bot: Bot, store: Store) -> None:
    await store.save_user(BridgeUser(mxid=ALICE, management_room="!alice:hub.test"))
    reply = await bot.say("!alice:hub.test", ALICE, "list-portals all")
    assert reply.startswith("Only bridge admins may use `list-portals all`")
