"""Logging in to a network through the provisioning API, as ``login <network>`` does in the
management room: start a flow, answer its steps, cancel. Refusals first, each with its JSON error
and nothing changed; the answer (a password, a token) is never logged, audited or echoed. Real
store (SQLite and PostgreSQL), real HTTP, the reference network's two-step token flow."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bridge.provision.errors import ApiError
from bridge.provision.processes import LoginProcesses
from tests.provision.calls import call, refused
from tests.provision.harness import (
    ALICE,
    ALICE_LOGIN,
    BOB,
    GOOD_TOKEN,
    NET,
    RELAY_USER,
    SECRET,
    STRANGER,
    ApiServer,
    Network,
    TokenLogin,
)

START = "/networks/reference/logins"
TOKEN_FLOW = {"flow_id": "token"}
ALICE_TOKEN_LOGIN = f"{ALICE}/token"


def start(api: ApiServer, user: str = ALICE) -> str:
    resp = call(api, "POST", START, TOKEN_FLOW, user=user)
    assert resp.status_code == 201, resp.text
    assert resp.json()["step"]["kind"] == "user_input"
    return str(resp.json()["process_id"])


def process(process_id: str) -> str:
    return f"/login-processes/{process_id}"


def audit_rows(api: ApiServer) -> list[tuple[Any, ...]]:
    rows = api.run(api.store.database.fetch("SELECT * FROM audit ORDER BY id"))
    return [tuple(row) for row in rows]


def token_logins(api: ApiServer) -> list[str]:
    rows = api.run(api.store.list_logins())
    return [row.login_id for row in rows if row.login_id.endswith("/token")]


# --- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "user", "status"),
    [
        (None, ALICE, 401),
        ("forged", ALICE, 401),
        (SECRET + "x", ALICE, 401),
        (SECRET, RELAY_USER, 403),
        (SECRET, STRANGER, 403),
        ("stranger-token", None, 403),
        ("alice-token", BOB, 403),  # Alice's own token acting for Bob
    ],
    ids=["none", "forged", "longer", "relay", "stranger", "stranger-token", "alice-as-bob"],
)
def test_a_caller_who_may_not_act_neither_starts_nor_touches_a_login(
    api: ApiServer, token: str | None, user: str | None, status: int
) -> None:
    process_id = start(api)
    before = api.snapshot()
    refused(call(api, "POST", START, TOKEN_FLOW, token=token, user=user), status)
    refused(call(api, "POST", process(process_id), {"answer": GOOD_TOKEN}, token=token,
                 user=user), status)  # fmt: skip
    refused(call(api, "DELETE", process(process_id), token=token, user=user), status)
    assert api.snapshot() == before
    assert len(api.connector.started) == 1 and not api.connector.started[0].cancelled
    # Alice's process is as it was: she can still finish it.
    assert call(api, "POST", process(process_id), {"answer": GOOD_TOKEN}).status_code == 200


def test_another_users_process_is_not_found_and_stays_as_it_was(api: ApiServer) -> None:
    alices = start(api)
    before = api.snapshot()
    for user in (BOB, "@admin:hub.test"):  # an admin is no exception: the process is hers
        refused(call(api, "POST", process(alices), {"answer": GOOD_TOKEN}, user=user), 404,
                "M_NOT_FOUND")  # fmt: skip
        refused(call(api, "DELETE", process(alices), user=user), 404, "M_NOT_FOUND")
    refused(call(api, "POST", process(alices), {"answer": GOOD_TOKEN}, user=None,
                 token="admin-token"), 404)  # fmt: skip
    assert api.snapshot() == before  # the network was not even asked
    assert not api.connector.started[0].cancelled
    done = call(api, "POST", process(alices), {"answer": GOOD_TOKEN})
    assert done.status_code == 200, done.text
    assert done.json()["login"]["user_id"] == ALICE


def test_unknown_flows_networks_and_processes(api: ApiServer) -> None:
    before = api.snapshot()
    assert "Its flows: token" in refused(call(api, "POST", START, {"flow_id": "password"}), 404,
                                         "M_NOT_FOUND")  # fmt: skip
    refused(call(api, "POST", "/networks/teams/logins", TOKEN_FLOW), 404, "M_NOT_FOUND")
    assert "needs no personal login" in refused(
        call(api, "POST", "/networks/plain/logins", TOKEN_FLOW), 501, "FI.PONTIS.NOT_SUPPORTED"
    )
    refused(call(api, "POST", process("p" * 32), {"answer": GOOD_TOKEN}), 404, "M_NOT_FOUND")
    refused(call(api, "DELETE", process("p" * 32)), 404, "M_NOT_FOUND")
    for bad in ("short", "p" * 33, "p" * 31 + "!", "p" * 31 + "%00"):
        refused(call(api, "POST", process(bad), {"answer": GOOD_TOKEN}), 400, "M_INVALID_PARAM")
        refused(call(api, "DELETE", process(bad)), 400, "M_INVALID_PARAM")
    assert api.snapshot() == before
    assert api.connector.started == []


@pytest.mark.parametrize(
    ("data", "status", "errcode"),
    [
        (b"{", 400, "M_NOT_JSON"),
        (b"[1]", 400, "M_BAD_JSON"),
        (b"", 400, "M_NOT_JSON"),
        (b"{}", 400, "M_INVALID_PARAM"),
        (b'{"flow_id": 1, "answer": 1}', 400, "M_INVALID_PARAM"),
        (b'{"flow_id": "", "answer": ""}', 400, "M_INVALID_PARAM"),
        (b'{"flow_id": "to\\u0000ken", "answer": "good\\u0000token"}', 400, "M_INVALID_PARAM"),
        (b'{"flow_id": "\\ud800", "answer": "\\ud800"}', 400, "M_INVALID_PARAM"),
        (json.dumps({"flow_id": "t" * 256, "answer": "a" * 8193}).encode(), 400, "M_INVALID_PARAM"),
        (b'{"answer": "' + b"a" * 70_000 + b'"}', 413, "M_TOO_LARGE"),
        (b"[" * 100_000, 413, "M_TOO_LARGE"),
    ],
    ids=[
        "truncated",
        "array",
        "empty",
        "missing",
        "number",
        "blank",
        "nul",
        "surrogate",
        "long",
        "huge",
        "deep",
    ],
)
def test_a_malformed_or_oversized_body_starts_and_answers_nothing(
    api: ApiServer, data: bytes, status: int, errcode: str
) -> None:
    process_id = start(api)
    before = api.snapshot()
    refused(call(api, "POST", START, data=data), status, errcode)
    refused(call(api, "POST", process(process_id), data=data), status, errcode)
    assert api.snapshot() == before
    assert len(api.connector.started) == 1


def test_an_answer_the_flow_refuses_keeps_the_process_and_a_wrong_token_ends_it(
    api: ApiServer,
) -> None:
    process_id = start(api)
    error = refused(call(api, "POST", process(process_id), {"answer": "not a token"}), 400,
                    "FI.PONTIS.LOGIN_REJECTED")  # fmt: skip
    assert "A token has no spaces." in error and "Send another answer" in error
    # It was kept for this answer; now it is over.
    error = refused(call(api, "POST", process(process_id), {"answer": "wrong-token"}), 400,
                    "FI.PONTIS.LOGIN_FAILED")  # fmt: skip
    assert "The network refused this token." in error and "start a new one" in error
    refused(call(api, "POST", process(process_id), {"answer": GOOD_TOKEN}), 404, "M_NOT_FOUND")
    refused(call(api, "DELETE", process(process_id)), 404, "M_NOT_FOUND")
    assert token_logins(api) == []
    assert audit_rows(api) == []
    # The connector was told, once, so it lets go of what the process held (a poll, a socket).
    assert api.connector.started[0].cancelled
    assert api.connector.network.asked.count(("login cancelled", ALICE)) == 1


def test_the_answer_is_never_logged_audited_or_echoed(
    api: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answers = ["my secret with spaces", "Wrong-Secret-4711", GOOD_TOKEN]
    shown = []
    first = start(api)
    shown.append(call(api, "POST", process(first), {"answer": answers[0]}).text)
    shown.append(call(api, "POST", process(first), {"answer": answers[1]}).text)
    second = start(api)
    done = call(api, "POST", process(second), {"answer": GOOD_TOKEN})
    assert done.status_code == 200, done.text
    shown.append(done.text)
    shown.append(call(api, "GET", "/logins").text)
    audit = json.dumps(audit_rows(api), default=str)
    assert "login" in audit  # the completed login is audited, without its token
    assert f"{ALICE} started a reference login" in caplog.text  # the log is captured
    # The SQLite driver's DEBUG lines show every statement's parameters, the stored login's
    # metadata among them (as for a login through the management room); nothing of the bridge.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiosqlite")
    for answer in answers:
        assert answer not in logged
        assert answer not in audit
        assert all(answer not in text for text in shown)


def test_a_fourth_start_cancels_the_users_oldest(api: ApiServer) -> None:
    bobs = start(api, BOB)
    alices = [start(api) for _ in range(4)]
    oldest = api.connector.started[1]
    assert oldest.user == ALICE and oldest.cancelled
    assert not any(p.cancelled for p in api.connector.started if p is not oldest)
    refused(call(api, "POST", process(alices[0]), {"answer": GOOD_TOKEN}), 404)
    for process_id in alices[1:]:
        assert call(api, "POST", process(process_id), {"answer": "a b"}).status_code == 400
    assert call(api, "POST", process(bobs), {"answer": GOOD_TOKEN}, user=BOB).status_code == 200


def test_a_process_expires_after_15_minutes(api: ApiServer) -> None:
    process_id = start(api)
    api.now += 14 * 60
    assert call(api, "POST", process(process_id), {"answer": "a b"}).status_code == 400  # alive
    api.now += 60
    refused(call(api, "POST", process(process_id), {"answer": GOOD_TOKEN}), 404, "M_NOT_FOUND")
    assert api.connector.started[0].cancelled
    assert token_logins(api) == []


def test_cancelling_a_login(api: ApiServer) -> None:
    process_id = start(api)
    resp = call(api, "DELETE", process(process_id))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"process_id": process_id, "cancelled": True}
    assert api.connector.started[0].cancelled
    refused(call(api, "DELETE", process(process_id)), 404, "M_NOT_FOUND")
    refused(call(api, "POST", process(process_id), {"answer": GOOD_TOKEN}), 404, "M_NOT_FOUND")
    assert token_logins(api) == []


async def test_when_the_bridge_has_too_many_logins_under_way_a_newcomer_waits() -> None:
    processes = LoginProcesses(log=logging.getLogger("test"), limit=2, clock=lambda: 0.0)
    network = Network()
    alices = await processes.add(ALICE, NET, TokenLogin(ALICE, network))
    await processes.add(BOB, NET, TokenLogin(BOB, network))
    with pytest.raises(ApiError) as refusal:
        await processes.check_room("@carol:hub.test")
    assert (refusal.value.status, refusal.value.errcode) == (429, "M_LIMIT_EXCEEDED")
    await processes.check_room(ALICE)  # her own oldest gives way to her new one
    await processes.add(ALICE, NET, TokenLogin(ALICE, network))
    assert await processes.get(ALICE, alices.id) is alices  # 3 per user: still hers
    await processes.close()  # the API stops: every process is cancelled
    assert await processes.get(ALICE, alices.id) is None
    assert network.asked.count(("login cancelled", ALICE)) == 2
    assert network.asked.count(("login cancelled", BOB)) == 1


# --- done ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("user", "token"), [(ALICE, SECRET), (None, "alice-token")],
                         ids=["shared-secret", "access-token"])  # fmt: skip
def test_start_answer_complete_and_the_login_is_listed(
    api: ApiServer, user: str | None, token: str
) -> None:
    started = call(api, "POST", START, TOKEN_FLOW, user=user, token=token)
    assert started.status_code == 201, started.text
    process_id = started.json()["process_id"]
    assert started.json() == {
        "process_id": process_id,
        "step": {"kind": "user_input", "instructions": "Send your token.", "secret": True},
        "login": None,
    }
    done = call(api, "POST", process(process_id), {"answer": GOOD_TOKEN}, user=user, token=token)
    assert done.status_code == 200, done.text
    assert done.json() == {
        "process_id": process_id,
        "step": {"kind": "complete", "instructions": "You are logged in.", "secret": False},
        "login": {"network": "reference", "login_id": ALICE_TOKEN_LOGIN, "user_id": ALICE,
                  "remote_name": "Token user", "connected": False, "state": "connecting"},
    }  # fmt: skip
    listed = call(api, "GET", "/logins").json()["logins"]
    assert [x["login_id"] for x in listed] == sorted([ALICE_LOGIN, ALICE_TOKEN_LOGIN])
    assert ALICE_TOKEN_LOGIN in api.clients_of  # loaded: its client is the bridge's now
    via = "shared_secret" if token == SECRET else "access_token"
    rows = api.run(api.store.database.fetch("SELECT actor, action, target, outcome, origin, "
                                            "detail FROM audit"))  # fmt: skip
    assert [tuple(r)[:5] for r in rows] == [
        (ALICE, "login", f"reference {ALICE_TOKEN_LOGIN}", "ok", f"provisioning {via} 127.0.0.1")
    ]
    assert rows[0]["detail"] == "Token user"
    refused(call(api, "POST", process(process_id), {"answer": GOOD_TOKEN}), 404)  # it is over
