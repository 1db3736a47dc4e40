"""What a permitted user and an admin get done through the provisioning API, and that it is what
the management room would have done: the store, the homeserver and the network agree after
each call. Real store (SQLite and PostgreSQL), real HTTP."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from bridge.core.ids import NetworkID, PortalKey, RemoteChatID
from tests.provision.harness import (
    ADMIN,
    ALICE,
    ALICE_LOGIN,
    ALICE_ROOM,
    BOB,
    BOB_IT,
    BOB_LOGIN,
    BOB_PORTAL_ROOM,
    PORTAL_ROOM,
    SECRET,
    ApiServer,
)


def call(api: ApiServer, method: str, path: str, *, user: str | None = ALICE,
         token: str = SECRET, **kwargs: Any) -> requests.Response:  # fmt: skip
    params = {"user_id": user, **kwargs.pop("params", {})} if user else kwargs.pop("params", {})
    return requests.request(method, api.url + path, params=params, timeout=30,
                            headers={"Authorization": f"Bearer {token}"}, **kwargs)  # fmt: skip


def test_whoami_with_the_shared_secret_and_with_the_users_own_token(api: ApiServer) -> None:
    by_secret = call(api, "GET", "/whoami")
    assert by_secret.status_code == 200
    me = by_secret.json()
    assert (me["user_id"], me["level"]) == (ALICE, "user")
    assert [n["id"] for n in me["networks"]] == ["reference", "plain"]
    assert [(x["network"], x["login_id"]) for x in me["logins"]] == [("reference", ALICE_LOGIN)]
    assert "hunter2" not in by_secret.text  # the login's metadata (its password) is not shown
    by_token = call(api, "GET", "/whoami", user=None, token="alice-token")
    assert by_token.json() == me
    admin = call(api, "GET", "/whoami", user=ADMIN, token="admin-token")  # user_id may repeat it
    assert (admin.json()["user_id"], admin.json()["level"]) == (ADMIN, "admin")


def test_an_access_token_is_checked_once_then_remembered(api: ApiServer) -> None:
    for _ in range(3):
        assert call(api, "GET", "/logins", user=None, token="alice-token").status_code == 200
    assert api.homeserver.whoami_calls == 1
    for _ in range(3):
        assert call(api, "GET", "/logins", user=None, token="forged").status_code == 401
    assert api.homeserver.whoami_calls == 2  # a refused token is remembered briefly too


def test_bridge_list_and_unbridge_a_room(api: ApiServer) -> None:
    body = {"room_id": ALICE_ROOM, "network": "reference", "chat_id": "three"}
    created = call(api, "POST", "/portals", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["room_id"] == ALICE_ROOM and created.json()["chat_id"] == "three"
    portal = api.run(api.store.get_portal(PortalKey(NetworkID("reference"), RemoteChatID("three"))))
    assert portal is not None and portal.mxid == ALICE_ROOM
    assert (ALICE_ROOM, "m.bridge") in api.homeserver.state
    mine = call(api, "GET", "/portals").json()["portals"]
    assert sorted(p["room_id"] for p in mine) == sorted([PORTAL_ROOM, ALICE_ROOM])
    again = call(api, "POST", "/portals", json=body)
    assert again.status_code == 409
    every = call(api, "GET", "/portals", user=ADMIN, params={"scope": "all"}).json()["portals"]
    assert len(every) == 3  # Alice's two and Bob's

    gone = call(api, "DELETE", "/portals/" + quote(ALICE_ROOM, safe=""))
    assert gone.status_code == 200, gone.text
    assert api.run(api.store.get_portal_by_mxid(ALICE_ROOM)) is None
    assert call(api, "DELETE", "/portals/" + quote(ALICE_ROOM, safe="")).status_code == 404


def test_logging_out_ends_the_remote_session_and_forgets_the_login(api: ApiServer) -> None:
    resp = call(api, "DELETE", f"/logins/reference/{quote(ALICE_LOGIN, safe='')}")
    assert resp.status_code == 200, resp.text
    assert api.clients_of[ALICE_LOGIN].logged_out and api.clients_of[ALICE_LOGIN].disconnected
    assert api.run(api.store.list_logins(user_mxid=ALICE)) == []
    assert call(api, "GET", "/logins").json() == {"logins": []}
    assert not api.clients_of[BOB_LOGIN].logged_out


def test_an_admin_may_log_out_another_users_login(api: ApiServer) -> None:
    resp = call(api, "DELETE", f"/logins/reference/{quote(BOB_LOGIN, safe='')}", user=ADMIN)
    assert resp.status_code == 200, resp.text
    assert api.run(api.store.list_logins(user_mxid=BOB)) == []
    rows = api.run(api.store.database.fetch("SELECT actor, action, target FROM audit"))
    assert [tuple(r) for r in rows] == [(ADMIN, "logout", f"reference {BOB_LOGIN} of {BOB}")]


def test_dead_letters_list_show_retry_and_drop(api: ApiServer) -> None:
    listed = call(api, "GET", "/dead-letters", user=ADMIN).json()
    assert listed["total"] == 2
    readable, unreadable = listed["dead_letters"]
    assert readable["retryable"] and not unreadable["retryable"]
    shown = call(api, "GET", f"/dead-letters/{readable['id']}", user=ADMIN)
    assert shown.json()["payload"]["content"] == {"body": "hi", "access_token": "[hidden]"}
    assert "leak" not in shown.text

    refused = call(api, "POST", f"/dead-letters/{unreadable['id']}/retry", user=ADMIN)
    assert refused.status_code == 409
    retried = call(api, "POST", f"/dead-letters/{readable['id']}/retry", user=ADMIN)
    assert retried.json() == {"id": readable["id"], "outcome": "retried"}
    assert api.retries == 1  # the bridge was told to look at its inbox
    inbox = api.run(api.store.pending_inbox())
    assert [row.event_id for row in inbox] == ["$lost"]
    assert call(api, "POST", f"/dead-letters/{readable['id']}/retry", user=ADMIN).status_code == 404

    dropped = call(api, "DELETE", f"/dead-letters/{unreadable['id']}", user=ADMIN)
    assert dropped.json() == {"id": unreadable["id"], "dropped": True}
    assert call(api, "GET", "/dead-letters", user=ADMIN).json()["total"] == 0


def test_admin_actions_are_in_the_audit_log(api: ApiServer) -> None:
    call(api, "GET", "/dead-letters", user=ADMIN)
    call(api, "DELETE", "/dead-letters/1", user=ADMIN)
    rows = api.run(api.store.database.fetch("SELECT actor, action, target, origin FROM audit"))
    actions = [(r["actor"], r["action"], r["target"]) for r in rows]
    assert (ADMIN, "dead-letters.list", "") in actions
    assert (ADMIN, "dead-letters.drop", "1") in actions
    assert all(r["origin"].startswith("provisioning shared_secret 127.0.0.1") for r in rows)


def test_an_agency_admin_manages_only_their_agency(api: ApiServer) -> None:
    """Bob's agency's admin: Bob's portal and login, none of Alice's, and no letter of hers."""
    portals = call(api, "GET", "/portals", user=BOB_IT, params={"scope": "all"})
    assert [p["room_id"] for p in portals.json()["portals"]] == [BOB_PORTAL_ROOM]
    letters = call(api, "GET", "/dead-letters", user=BOB_IT).json()
    assert letters == {"total": 0, "dead_letters": []}
    alices = call(api, "GET", "/dead-letters", user=ADMIN).json()["dead_letters"][0]["id"]
    before = api.snapshot()
    for method, path in (("GET", f"/dead-letters/{alices}"), ("DELETE", f"/dead-letters/{alices}"),
                         ("POST", f"/dead-letters/{alices}/retry"),
                         ("DELETE", f"/logins/reference/{quote(ALICE_LOGIN, safe='')}")):  # fmt: skip
        assert call(api, method, path, user=BOB_IT).status_code == 404, path
    assert api.snapshot() == before
    bobs = call(api, "DELETE", f"/logins/reference/{quote(BOB_LOGIN, safe='')}", user=BOB_IT)
    assert bobs.status_code == 200, bobs.text
    # Alice is in no agency of hers: every portal is still beyond her.
    assert call(api, "GET", "/portals", params={"scope": "all"}).status_code == 403
