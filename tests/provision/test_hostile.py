"""Requests the provisioning API must refuse, each with its JSON error and nothing changed:
every operation of the OpenAPI document without a token, with a wrong one, for a stranger, for
a relay-level user, as the bot or a ghost; admin operations by a user; malformed and oversized
bodies; rooms that are not the user's. Real store (SQLite and PostgreSQL), real HTTP."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
import requests

from bridge.provision.api import openapi_text
from tests.provision.harness import (
    ADMIN,
    ALICE,
    ALICE_LOGIN,
    ALICE_ROOM,
    BOB_LOGIN,
    BOB_PORTAL_ROOM,
    BOB_ROOM,
    BOT,
    GHOST,
    PORTAL_ROOM,
    POWERLESS_ROOM,
    RELAY_USER,
    SECRET,
    STRANGER,
    ApiServer,
)

ADMIN_ONLY = {"listDeadLetters", "showDeadLetter", "dropDeadLetter", "retryDeadLetter"}
SAMPLE = {"network": "reference", "login_id": ALICE_LOGIN, "room_id": PORTAL_ROOM, "letter_id": "1",
          "process_id": "p" * 32, "contact": "dana@elsewhere.test"}  # fmt: skip
BRIDGE_BODY = {"room_id": ALICE_ROOM, "network": "reference", "chat_id": "three"}


def operations() -> list[tuple[str, str, str]]:
    """(operationId, method, path with sample parameters) of every authenticated operation."""
    document = json.loads(openapi_text())
    found = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method == "parameters" or op.get("security") == []:
                continue
            filled = path
            for name, value in SAMPLE.items():
                filled = filled.replace("{" + name + "}", quote(value, safe=""))
            found.append((op["operationId"], method.upper(), filled))
    return found


OPERATIONS = operations()


def call(api: ApiServer, method: str, path: str, *, token: str | None = SECRET,
         user: str | None = ALICE, body: Any = None, **kwargs: Any) -> requests.Response:  # fmt: skip
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    params = {"user_id": user} if user is not None else {}
    if body is None and method == "POST" and path == "/portals":
        body = BRIDGE_BODY
    return requests.request(method, api.url + path, headers=headers, params=params,
                            json=body, timeout=30, **kwargs)  # fmt: skip


def refused(resp: requests.Response, status: int, errcode: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"errcode", "error"} and body["error"]
    if errcode is not None:
        assert body["errcode"] == errcode
    return body


def test_every_operation_is_in_the_list() -> None:
    assert {op for op, _, _ in OPERATIONS} == {
        "whoami", "listLogins", "logout", "listPortals", "bridgeRoom", "unbridgeRoom",
        "listLoginFlows", "searchPeople", "startChat", "setRelay", "unsetRelay",
        "listDeadLetters", "showDeadLetter", "dropDeadLetter", "retryDeadLetter",
        "startLogin", "answerLogin", "cancelLogin", "listContacts", "addContact",
        "removeContact",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "errcode"),
    [
        ({}, "M_MISSING_TOKEN"),
        ({"Authorization": "Bearer "}, "M_MISSING_TOKEN"),
        ({"Authorization": f"Basic {SECRET}"}, "M_MISSING_TOKEN"),
        ({"Authorization": "Bearer wrong-secret"}, "M_UNKNOWN_TOKEN"),
        ({"Authorization": f"Bearer {SECRET}x"}, "M_UNKNOWN_TOKEN"),
        ({"Authorization": f"Bearer {SECRET[:-1]}"}, "M_UNKNOWN_TOKEN"),
        ({"Authorization": "Bearer " + "a" * 5000}, "M_UNKNOWN_TOKEN"),
    ],
    ids=["none", "empty", "basic", "wrong", "longer", "shorter", "huge"],
)
def test_without_a_valid_token_every_operation_is_401_and_changes_nothing(
    api: ApiServer, headers: dict[str, str], errcode: str
) -> None:
    before = api.snapshot()
    for _, method, path in OPERATIONS:
        resp = call(api, method, path, token=None, user=ADMIN, headers=dict(headers))
        refused(resp, 401, errcode)
        assert resp.headers.get("WWW-Authenticate") == "Bearer"
    assert api.snapshot() == before


@pytest.mark.parametrize(
    ("user", "token", "status", "errcode"),
    [
        (STRANGER, SECRET, 403, "M_FORBIDDEN"),  # another server: "*" is relay
        (RELAY_USER, SECRET, 403, "M_FORBIDDEN"),
        (BOT, SECRET, 403, "M_FORBIDDEN"),
        (GHOST, SECRET, 403, "M_FORBIDDEN"),
        (None, SECRET, 400, "M_MISSING_PARAM"),  # the secret says nothing about who acts
        ("alice", SECRET, 400, "M_INVALID_PARAM"),
        (f"{ADMIN}\x00", SECRET, 400, "M_INVALID_PARAM"),
        (ADMIN, "alice-token", 403, "M_FORBIDDEN"),  # Alice's token acting as the admin
        (None, "stranger-token", 403, "M_FORBIDDEN"),
        (None, "unknown-token", 401, "M_UNKNOWN_TOKEN"),
    ],
    ids=[
        "stranger",
        "relay",
        "bot",
        "ghost",
        "no-user",
        "bad-user",
        "nul-user",
        "alice-as-admin",
        "stranger-token",
        "unknown-token",
    ],
)
def test_a_caller_who_may_not_act_changes_nothing_anywhere(
    api: ApiServer, user: str | None, token: str, status: int, errcode: str
) -> None:
    before = api.snapshot()
    for _, method, path in OPERATIONS:
        refused(call(api, method, path, token=token, user=user), status, errcode)
    assert api.snapshot() == before


def test_a_user_is_refused_every_admin_operation(api: ApiServer) -> None:
    before = api.snapshot()
    for op, method, path in OPERATIONS:
        if op in ADMIN_ONLY:
            refused(call(api, method, path, user=ALICE), 403, "M_FORBIDDEN")
            refused(call(api, method, path, token="alice-token", user=None), 403, "M_FORBIDDEN")
    every_portal = requests.get(api.url + "/portals", params={"user_id": ALICE, "scope": "all"},
                                headers={"Authorization": f"Bearer {SECRET}"}, timeout=30)  # fmt: skip
    refused(every_portal, 403, "M_FORBIDDEN")
    assert api.snapshot() == before


@pytest.mark.parametrize(
    ("data", "content_type", "status", "errcode"),
    [
        (b"{", "application/json", 400, "M_NOT_JSON"),
        (b"\xff\xfe", "application/json", 400, "M_NOT_JSON"),
        (b"[1, 2]", "application/json", 400, "M_BAD_JSON"),
        (b"null", "application/json", 400, "M_BAD_JSON"),
        (b"", "application/json", 400, "M_NOT_JSON"),
        (b"[" * 100_000, "application/json", 413, "M_TOO_LARGE"),
        (b'{"room_id": "' + b"x" * 70_000 + b'"}', "application/json", 413, "M_TOO_LARGE"),
        (b"[" * 50_000 + b"]" * 5_000, "application/json", 400, "M_NOT_JSON"),
    ],
    ids=["truncated", "not-utf8", "array", "null", "empty", "huge", "huge-field", "deep"],
)
def test_a_malformed_or_oversized_body_is_refused(
    api: ApiServer, data: bytes, content_type: str, status: int, errcode: str
) -> None:
    before = api.snapshot()
    resp = requests.post(api.url + "/portals", params={"user_id": ALICE}, data=data, timeout=30,
                         headers={"Authorization": f"Bearer {SECRET}",
                                  "Content-Type": content_type})  # fmt: skip
    refused(resp, status, errcode)
    assert api.snapshot() == before


@pytest.mark.parametrize(
    "body",
    [
        {"network": "reference", "chat_id": "three"},
        {"room_id": ALICE_ROOM, "network": "reference"},
        {"room_id": ALICE_ROOM, "network": "reference", "chat_id": 3},
        {"room_id": ALICE_ROOM, "network": "reference", "chat_id": ""},
        {"room_id": ALICE_ROOM, "network": "reference", "chat_id": "th\x00ree"},
        {"room_id": ALICE_ROOM, "network": "reference", "chat_id": "\ud800"},
        {"room_id": ALICE_ROOM, "network": ["reference"], "chat_id": "three"},
        {"room_id": "alice-room", "network": "reference", "chat_id": "three"},
        {"room_id": ALICE_ROOM + "\n", "network": "reference", "chat_id": "three"},
        {"room_id": ALICE_ROOM, "network": "reference", "chat_id": "x" * 1001},
    ],
    ids=[
        "no-room",
        "no-chat",
        "number",
        "empty",
        "nul",
        "surrogate",
        "list",
        "not-a-room-id",
        "newline",
        "long",
    ],
)
def test_a_bridge_request_with_bad_fields_is_400(api: ApiServer, body: dict[str, Any]) -> None:
    before = api.snapshot()
    raw = json.dumps(body)  # a lone surrogate as \ud800, as a hostile client may send it
    resp = requests.post(api.url + "/portals", params={"user_id": ALICE}, data=raw, timeout=30,
                         headers={"Authorization": f"Bearer {SECRET}"})  # fmt: skip
    refused(resp, 400)
    assert api.snapshot() == before


@pytest.mark.parametrize(
    ("room", "status", "why"),
    [
        (BOB_ROOM, 403, "not in this room"),
        (f"!nowhere:{'hub.test'}", 404, "invite it first"),
        (POWERLESS_ROOM, 403, "power level"),
        (PORTAL_ROOM, 409, "already bridged"),
        ("!elsewhere:evil.test", 404, "invite it first"),
    ],
    ids=["bobs-room", "unknown-room", "no-power", "already-portal", "remote-room"],
)
def test_bridging_a_room_that_is_not_the_users_changes_nothing(
    api: ApiServer, room: str, status: int, why: str
) -> None:
    before = api.snapshot()
    body = {"room_id": room, "network": "reference", "chat_id": "three"}
    assert why in refused(call(api, "POST", "/portals", body=body), status)["error"]
    assert api.snapshot() == before


def test_bridging_a_chat_already_bridged_elsewhere_or_unknown_changes_nothing(
    api: ApiServer,
) -> None:
    state = api.snapshot()["store"]
    body = {"room_id": ALICE_ROOM, "network": "reference", "chat_id": "one"}
    refused(call(api, "POST", "/portals", body=body), 409)
    body = {"room_id": ALICE_ROOM, "network": "reference", "chat_id": "nine"}
    refused(call(api, "POST", "/portals", body=body), 404)
    body = {"room_id": ALICE_ROOM, "network": "teams", "chat_id": "one"}
    refused(call(api, "POST", "/portals", body=body), 404)
    assert api.snapshot()["store"] == state


def test_unbridging_someone_elses_room_changes_nothing(api: ApiServer) -> None:
    before = api.snapshot()
    refused(call(api, "DELETE", "/portals/" + quote(BOB_PORTAL_ROOM, safe="")), 403)
    refused(call(api, "DELETE", "/portals/" + quote(ALICE_ROOM, safe="")), 404)  # no portal
    refused(call(api, "DELETE", "/portals/not-a-room"), 400)
    assert api.snapshot() == before


def test_someone_elses_login_is_not_found_and_stays(api: ApiServer) -> None:
    before = api.snapshot()
    refused(call(api, "DELETE", f"/logins/reference/{quote(BOB_LOGIN)}"), 404, "M_NOT_FOUND")
    refused(call(api, "DELETE", "/logins/reference/nobody"), 404, "M_NOT_FOUND")
    refused(call(api, "DELETE", f"/logins/teams/{quote(ALICE_LOGIN)}"), 404, "M_NOT_FOUND")
    refused(call(api, "DELETE", "/logins/reference/a%00b"), 400, "M_INVALID_PARAM")
    assert api.snapshot() == before


@pytest.mark.parametrize("letter", ["0", "-1", "abc", "99999999999999999999", "1.5", "%C2%B2"])
def test_a_bad_dead_letter_id_is_400(api: ApiServer, letter: str) -> None:
    before = api.snapshot()
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/retry")):
        refused(call(api, method, f"/dead-letters/{letter}{suffix}", user=ADMIN), 400)
    assert api.snapshot() == before


def test_unknown_paths_and_methods_answer_json(api: ApiServer) -> None:
    refused(call(api, "GET", "/nothing-here"), 404, "M_UNRECOGNIZED")
    refused(call(api, "PUT", "/whoami"), 405, "M_UNRECOGNIZED")


def test_a_body_sent_in_small_chunks_is_read_whole_and_one_too_large_is_stopped(
    api: ApiServer,
) -> None:
    body = json.dumps({"room_id": BOB_ROOM, "network": "reference", "chat_id": "x" * 900})

    def pieces(data: bytes, size: int) -> Any:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    whole = requests.post(api.url + "/portals", params={"user_id": ALICE}, timeout=30,
                          data=pieces(body.encode(), 7), headers=headers)  # fmt: skip
    assert "not in this room" in refused(whole, 403)["error"]  # read whole, then refused
    before = api.snapshot()
    endless = requests.post(api.url + "/portals", params={"user_id": ALICE}, timeout=30,
                            data=pieces(b"[" * 200_000, 4096), headers=headers)  # fmt: skip
    refused(endless, 413, "M_TOO_LARGE")
    assert api.snapshot() == before


def test_without_a_valid_token_nothing_else_is_judged(api: ApiServer) -> None:
    for user in ("not-a-user", f"{ADMIN}\x00"):
        refused(call(api, "GET", "/whoami", token="forged", user=user), 401, "M_UNKNOWN_TOKEN")
    resp = requests.get(api.url + "/dead-letters", params={"user_id": ADMIN, "typo": "1"},
                        headers={"Authorization": "Bearer forged"}, timeout=30)  # fmt: skip
    refused(resp, 401, "M_UNKNOWN_TOKEN")
    resp = requests.get(api.url + "/dead-letters", params={"user_id": ADMIN, "typo": "1"},
                        headers={"Authorization": f"Bearer {SECRET}"}, timeout=30)  # fmt: skip
    refused(resp, 400, "M_INVALID_PARAM")
