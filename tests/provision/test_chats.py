"""Networks and relay mode through the provisioning API: login flows, search, start a chat, relay
on and off, as ``search``, ``start-chat``, ``set-relay`` and ``unset-relay`` do in the management
room. Refusals first, each with its JSON error and nothing changed. Real store (SQLite and
PostgreSQL), real HTTP."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from bridge.core.ids import PortalKey, RemoteChatID
from tests.provision.calls import call, refused
from tests.provision.harness import (
    ADMIN,
    ALICE,
    ALICE_LOGIN,
    ALICE_ROOM,
    BOB,
    BOB_PORTAL_ROOM,
    CAROL,
    DOMAIN,
    GHOST,
    NET,
    PORTAL_ROOM,
    RELAY_USER,
    SECRET,
    STRANGER,
    ApiServer,
)
from tests.store_fixtures import StoreTarget

SEARCH = "/networks/reference/search"
CHATS = "/networks/reference/chats"
RELAY = f"/portals/{quote(PORTAL_ROOM, safe='')}/relay"
DANA = "dana@elsewhere.test"
REQUESTS = [  # every new operation, with a body it would accept
    ("GET", "/networks/reference/login-flows", None),
    ("POST", SEARCH, {"query": "elsewhere"}),
    ("POST", CHATS, {"id": DANA}),
    ("PUT", RELAY, None),
    ("DELETE", RELAY, None),
]


def relay_login(api: ApiServer) -> str | None:
    portal = api.run(api.store.get_portal_by_mxid(PORTAL_ROOM))
    assert portal is not None
    return portal.relay_login


# --- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "forged", SECRET + "x"], ids=["none", "forged", "longer"])
def test_without_a_valid_token_nothing_is_asked_or_changed(
    api: ApiServer, token: str | None
) -> None:
    before = api.snapshot()
    for method, path, body in REQUESTS:
        refused(call(api, method, path, body, token=token, user=ADMIN), 401)
    assert api.snapshot() == before


@pytest.mark.parametrize("user", [RELAY_USER, STRANGER, GHOST], ids=["relay", "stranger", "ghost"])
def test_a_user_who_may_not_use_the_bridge_is_403_and_changes_nothing(
    api: ApiServer, user: str
) -> None:
    before = api.snapshot()
    for method, path, body in REQUESTS:
        refused(call(api, method, path, body, user=user), 403, "M_FORBIDDEN")
    assert api.snapshot() == before


def test_a_chat_the_federation_policy_does_not_allow_is_403_before_the_network_is_asked(
    api: ApiServer,
) -> None:
    """Carol may use the bridge, but no federation rule connects her server with anyone."""
    before = api.snapshot()
    error = refused(call(api, "POST", CHATS, {"id": DANA}, user=CAROL), 403, "M_FORBIDDEN")
    assert "federation policy" in error and "partner.test" in error
    assert api.snapshot() == before  # no room, no invitation, the network not even asked


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_relay_mode_needs_the_power_level_and_membership_in_the_room(
    api: ApiServer, method: str
) -> None:
    members, _ = api.homeserver.rooms[PORTAL_ROOM]
    api.homeserver.rooms[PORTAL_ROOM] = (members, {"users": {ADMIN: 100}, "state_default": 50})
    before = api.snapshot()
    assert "power level" in refused(call(api, method, RELAY), 403, "M_FORBIDDEN")
    assert "not in this room" in refused(call(api, method, RELAY, user=BOB), 403)
    bobs = f"/portals/{quote(BOB_PORTAL_ROOM, safe='')}/relay"
    assert "not in this room" in refused(call(api, method, bobs), 403)
    assert "not bridged" in refused(call(api, method, f"/portals/{quote(ALICE_ROOM)}/relay"), 404)
    refused(call(api, method, "/portals/not-a-room/relay"), 400, "M_INVALID_PARAM")
    assert api.snapshot() == before and relay_login(api) is None


def test_relay_mode_cannot_be_turned_on_while_the_config_turns_it_off(
    store_target: StoreTarget,
) -> None:
    with ApiServer(store_target, relay_enabled=False) as api:
        before = api.snapshot()
        assert "bridge.relay.enabled" in refused(call(api, "PUT", RELAY), 403, "M_FORBIDDEN")
        assert api.snapshot() == before
        assert call(api, "DELETE", RELAY).status_code == 200  # off is always allowed


BAD_BODIES = {
    "long-query": (SEARCH, {"query": "x" * 257}, 400),
    "empty-query": (SEARCH, {"query": ""}, 400),
    "number": (SEARCH, {"query": 7}, 400),
    "nul": (SEARCH, {"query": "a\x00b"}, 400),
    "no-query": (SEARCH, {"id": "elsewhere"}, 400),
    "truncated": (SEARCH, b'{"query": "', 400),
    "array": (SEARCH, b'["elsewhere"]', 400),
    "huge-search": (SEARCH, b'{"query": "' + b"x" * 70_000 + b'"}', 413),
    "long-id": (CHATS, {"id": "x" * 1001}, 400),
    "empty-id": (CHATS, {"id": ""}, 400),
    "list": (CHATS, {"id": [DANA]}, 400),
    "nul-id": (CHATS, {"id": "dana\x00@elsewhere.test"}, 400),
    "surrogate": (CHATS, {"id": "\ud800"}, 400),
    "no-id": (CHATS, {"query": DANA}, 400),
    "null": (CHATS, b"null", 400),
    "huge-chat": (CHATS, b"[" * 100_000, 413),
}


@pytest.mark.parametrize(("path", "body", "status"), BAD_BODIES.values(), ids=BAD_BODIES)
def test_a_malformed_or_oversized_body_is_refused(
    api: ApiServer, path: str, body: Any, status: int
) -> None:
    before = api.snapshot()
    data = body if isinstance(body, bytes) else json.dumps(body).encode()  # \ud800 as sent
    refused(call(api, "POST", path, data=data), status)
    assert api.snapshot() == before


def test_unknown_networks_and_people_and_networks_that_cannot_are_refused(
    api: ApiServer,
) -> None:
    before = api.snapshot()
    for method, path, body in REQUESTS[:3]:
        refused(call(api, method, path.replace("reference", "teams"), body), 404, "M_NOT_FOUND")
        refused(call(api, method, path.replace("reference", "Ref%21"), body), 400)
    error = refused(call(api, "POST", "/networks/plain/search", {"query": "a"}), 501)
    assert "cannot be searched" in error and "/networks/plain/chats" in error
    error = refused(call(api, "POST", "/networks/plain/chats", {"id": "a"}), 501)
    assert "cannot be started from Matrix" in error
    assert api.snapshot() == before
    refused(call(api, "POST", CHATS, {"id": "nobody@elsewhere.test"}), 404, "M_NOT_FOUND")
    after = api.snapshot()
    assert (after["store"], after["rooms"], after["invited"]) == (
        before["store"],
        before["rooms"],
        before["invited"],
    )  # the network was asked, and said no


# --- done ---------------------------------------------------------------------------------------


def test_login_flows_of_a_network(api: ApiServer) -> None:
    flows = call(api, "GET", "/networks/reference/login-flows")
    assert flows.status_code == 200, flows.text
    assert flows.json() == {
        "login_flows": [{"id": "token", "name": "Token", "description": "A token of the network"}]
    }
    assert call(api, "GET", "/networks/plain/login-flows").json() == {"login_flows": []}


def test_search_finds_people_through_the_users_login(api: ApiServer) -> None:
    found = call(api, "POST", SEARCH, {"query": "elsewhere"})
    assert found.status_code == 200, found.text
    assert found.json() == {"results": [{"id": DANA, "name": "Dana"},
                                        {"id": "dan@elsewhere.test", "name": "Dan"}]}  # fmt: skip
    assert call(api, "POST", SEARCH, {"query": "nobody"}).json() == {"results": []}
    assert api.network.asked == [("search", "elsewhere"), ("search", "nobody")]


def test_start_a_chat_then_again_and_it_is_audited(api: ApiServer) -> None:
    started = call(api, "POST", CHATS, {"id": DANA})
    assert started.status_code == 201, started.text
    portal = started.json()
    room = f"!dm1:{DOMAIN}"
    assert (portal["room_id"], portal["is_direct"], portal["relay"]) == (room, True, False)
    ((created, invited),) = api.homeserver.created
    assert created == room and ALICE in invited
    key = PortalKey(NET, RemoteChatID(f"dm {DANA} {ALICE}"))
    stored = api.run(api.store.get_portal(key))
    assert stored is not None and stored.mxid == room
    assert room in [p["room_id"] for p in call(api, "GET", "/portals").json()["portals"]]

    again = call(api, "POST", CHATS, {"id": DANA})
    assert again.status_code == 200, again.text
    assert again.json()["room_id"] == room
    assert api.homeserver.invited == [(room, ALICE)] and len(api.homeserver.created) == 1
    rows = api.run(api.store.database.fetch("SELECT actor, action, target, detail FROM audit"))
    assert [tuple(r) for r in rows] == [(ALICE, "start-chat", f"reference {DANA}", room)] * 2


def test_relay_mode_on_and_off(api: ApiServer) -> None:
    on = call(api, "PUT", RELAY)
    assert on.status_code == 200, on.text
    assert (on.json()["room_id"], on.json()["relay"]) == (PORTAL_ROOM, True)
    assert relay_login(api) == ALICE_LOGIN  # through her own login
    listed = call(api, "GET", "/portals").json()["portals"]
    assert [p["relay"] for p in listed if p["room_id"] == PORTAL_ROOM] == [True]
    off = call(api, "DELETE", RELAY)
    assert off.status_code == 200 and off.json()["relay"] is False
    assert relay_login(api) is None
    assert call(api, "DELETE", RELAY).status_code == 200  # already off: still off

    assert call(api, "PUT", RELAY, user=ADMIN).status_code == 200  # no login: the bridge's
    assert relay_login(api) == ""
    rows = api.run(api.store.database.fetch("SELECT actor, action, detail, origin FROM audit"))
    assert [(r["actor"], r["action"], r["detail"]) for r in rows] == [
        (ALICE, "set-relay", f"{PORTAL_ROOM} login {ALICE_LOGIN}"),
        (ALICE, "unset-relay", PORTAL_ROOM),
        (ALICE, "unset-relay", PORTAL_ROOM),
        (ADMIN, "set-relay", f"{PORTAL_ROOM} the bridge"),
    ]
    assert all(r["origin"].startswith("provisioning shared_secret") for r in rows)
