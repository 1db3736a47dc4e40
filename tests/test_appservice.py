"""No poison transaction: what the homeserver built is taken, whatever one event looks like.

Synapse retries a refused transaction for ever and sends nothing newer meanwhile, so one event
the bridge cannot read must not refuse the transaction: the good events are stored, the bad one
is a dead letter with the reason, and the answer is 200. Only a body that is no transaction at
all, or a wrong token, is refused, with a 4xx and never a 500 (both engines).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.core.appservice import AppServiceAPI, BadTransaction, parse_transaction
from bridge.core.metrics import Metrics
from bridge.portal.dead_letters import UNREADABLE
from bridge.portal.models import InboxRow
from bridge.portal.store import Store

TOKEN = "hs-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def event(event_id: str, body: str = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id, "room_id": "!room:hub.test", "sender": "@alice:hub.test",
        "type": "m.room.message", "content": {"msgtype": "m.text", "body": body},
    } | extra  # fmt: skip


class Api:
    def __init__(self, store: Store, client: TestClient[Any, Any]) -> None:
        self.store = store
        self.client = client
        self.handed: list[InboxRow] = []

    async def put(self, txn_id: str, body: Any, headers: dict[str, str] = AUTH) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        resp = await self.client.put(
            f"/_matrix/app/v1/transactions/{txn_id}", data=data, headers=headers
        )
        return resp.status, await resp.json()

    async def inbox(self) -> list[str | None]:
        return [row.event_id for row in await self.store.pending_inbox()]


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    handed: list[InboxRow] = []

    async def nobody(_: str) -> bool:
        return False

    app = web.Application()
    AppServiceAPI(
        hs_token=TOKEN, store=store, metrics=Metrics(), on_stored=handed.extend,
        query_user=nobody, query_alias=nobody, is_echo=lambda e: e.get("sender") == "@bot:hub.test",
        log=logging.getLogger("test.appservice"),
    ).add_routes(app)  # fmt: skip
    async with TestClient(TestServer(app)) as client:
        result = Api(store, client)
        result.handed = handed
        yield result


# --- parse_transaction ------------------------------------------------------------------------


def test_a_bad_event_among_good_ones_is_set_aside_with_its_reason() -> None:
    parsed = parse_transaction(
        {
            "events": [
                event("$a"), {"type": "m.room.message"}, 42, event("$b", sender=7),
                event("$c"), event("$nul\x00", room_id="!r:hub"),
            ],
            "ephemeral": "not a list",
            "device_lists": ["not", "an", "object"],
            "to_device": [{"type": "m.room_key_request"}, None],
        }
    )  # fmt: skip
    assert [item.event_id for item in parsed.items if item.kind == "pdu"] == ["$a", "$c"]
    assert [item.kind for item in parsed.items if item.kind != "pdu"] == ["to_device"]
    reasons = {u.reason for u in parsed.unreadable}
    assert {
        "events[1].event_id must be a string",
        "events[2] must be an object",
        "events[3].sender must be a string",
        "events[5].event_id must be a string without NUL",
        "ephemeral must be a list",
        "device_lists must be an object",
        "to_device[1] must be an object",
    } == reasons
    kinds = sorted(u.kind for u in parsed.unreadable)
    assert kinds == ["device_lists", "ephemeral", "pdu", "pdu", "pdu", "pdu", "to_device"]
    (sender_bad,) = [u for u in parsed.unreadable if "sender" in u.reason]
    assert (sender_bad.event_id, sender_bad.room_id) == ("$b", "!room:hub.test")
    assert sender_bad.raw["sender"] == 7


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "transaction body must be a JSON object"),
        ("text", "transaction body must be a JSON object"),
        (None, "transaction body must be a JSON object"),
        ({"ephemeral": []}, "events is required"),
        ({"events": "nope"}, "events must be a list"),
        ({"events": None}, "events must be a list"),
        ({"events": {"0": {}}}, "events must be a list"),
    ],
)
def test_what_is_no_transaction_at_all_is_refused(body: Any, reason: str) -> None:
    with pytest.raises(BadTransaction, match=reason):
        parse_transaction(body)


# --- put_transaction --------------------------------------------------------------------------


async def test_bad_events_among_good_ones_answer_200_and_become_dead_letters(api: Api) -> None:
    body = {"events": [event("$good1"), {"type": "m.room.message", "room_id": "!x:hub"},
                       "garbage", event("$good2")]}  # fmt: skip
    assert await api.put("t1", body) == (200, {})
    assert await api.inbox() == ["$good1", "$good2"]
    assert [row.event_id for row in api.handed] == ["$good1", "$good2"]
    letters = await api.store.dead_letters.newest()
    assert [(x.kind, x.to_network, x.room_id) for x in letters] == [
        ("pdu", True, "!x:hub"), ("pdu", True, None),
    ]  # fmt: skip
    assert all(x.error.startswith(UNREADABLE) and "(transaction t1)" in x.error for x in letters)
    assert "events[1].event_id must be a string" in letters[0].error
    shown = await api.store.dead_letters.get(letters[1].id)
    assert shown is not None and json.loads(shown.payload or "") == "garbage"
    assert not shown.retryable

    # The homeserver sends it again (it did not see the 200): nothing is stored twice.
    assert await api.put("t1", body) == (200, {})
    assert len(await api.store.dead_letters.newest()) == 2
    assert await api.inbox() == ["$good1", "$good2"]


async def test_a_transaction_of_only_bad_events_is_taken_once(api: Api) -> None:
    assert await api.put("only-bad", {"events": [{"nothing": "here"}]}) == (200, {})
    assert await api.put("only-bad", {"events": [{"nothing": "here"}]}) == (200, {})
    assert len(await api.store.dead_letters.newest()) == 1
    assert await api.inbox() == []


async def test_events_the_database_cannot_take_are_parked_not_refused(api: Api) -> None:
    # A lone surrogate is valid JSON but not UTF-8: neither engine can store it.
    surrogate = b'{"event_id": "$s", "room_id": "!room:hub.test", "sender": "@a:hub.test",' \
        b' "type": "m.room.message", "content": {"body": "\\ud800"}}'  # fmt: skip
    huge_number = b'{"event_id": "$n", "room_id": "!room:hub.test", "sender": "@a:hub.test",' \
        b' "type": "m.room.message", "content": {"n": ' + b"9" * 5000 + b"}}"  # fmt: skip
    good = json.dumps(event("$ok")).encode()
    body = b'{"events": [' + b", ".join([surrogate, good, huge_number]) + b"]}"
    assert await api.put("weird", body) == (200, {})
    assert await api.inbox() == ["$ok"]
    letters = await api.store.dead_letters.newest()
    assert sorted(x.event_id or "" for x in letters) == ["$n", "$s"]
    for letter in letters:
        full = await api.store.dead_letters.get(letter.id)
        assert full is not None and full.payload and full.error.startswith(UNREADABLE)


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 400, "M_NOT_JSON"),
        (b'{"events": [{"content": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}", 400, "M_NOT_JSON"),
        (b"{" * 100_000, 400, "M_NOT_JSON"),
        (b'{"events": [', 400, "M_NOT_JSON"),
        (b"\xff\xfe{}", 400, "M_NOT_JSON"),
        (b"", 400, "M_NOT_JSON"),
        (b"[]", 400, "M_BAD_JSON"),
        (b'"events"', 400, "M_BAD_JSON"),
        (b"null", 400, "M_BAD_JSON"),
        (b'{"ephemeral": []}', 400, "M_BAD_JSON"),
        (b'{"events": "nope"}', 400, "M_BAD_JSON"),
    ],
)
async def test_a_body_that_is_no_transaction_is_a_4xx_and_stores_nothing(
    api: Api, body: bytes, status: int, errcode: str
) -> None:
    code, answer = await api.put("bad", body)
    assert (code, answer["errcode"]) == (status, errcode)
    assert await api.store.database.fetchval("SELECT COUNT(*) FROM as_transaction") == 0
    assert await api.store.dead_letters.count() == 0


@pytest.mark.parametrize(
    ("headers", "status", "errcode"),
    [
        ({"Authorization": "Bearer wrong"}, 403, "M_FORBIDDEN"),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403, "M_FORBIDDEN"),
        ({}, 401, "M_UNAUTHORIZED"),
    ],
)
async def test_a_wrong_token_is_refused_before_the_body_is_read(
    api: Api, headers: dict[str, str], status: int, errcode: str
) -> None:
    code, answer = await api.put("t", {"events": [{"bad": 1}, event("$a")]}, headers=headers)
    assert (code, answer["errcode"]) == (status, errcode)
    assert await api.inbox() == [] and await api.store.dead_letters.count() == 0


async def test_a_database_outage_is_still_a_500_so_the_homeserver_retries(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*args: Any) -> None:
        raise OSError("database unreachable")

    monkeypatch.setattr(api.store, "store_transaction", down)
    code, answer = await api.put("t", {"events": [event("$a"), {"bad": 1}]})
    assert (code, answer["errcode"]) == (500, "M_UNKNOWN")
    monkeypatch.undo()
    assert await api.store.dead_letters.count() == 0
    assert await api.put("t", {"events": [event("$a"), {"bad": 1}]}) == (200, {})
    assert await api.inbox() == ["$a"] and await api.store.dead_letters.count() == 1


async def test_echoes_are_still_dropped_and_advisory_counts_not_stored(api: Api) -> None:
    body = {"events": [event("$echo", sender="@bot:hub.test"), event("$real")],
            "device_one_time_keys_count": {"@bot:hub.test": {"DEV": {"signed_curve25519": 5}}}}  # fmt: skip
    assert await api.put("t", body) == (200, {})
    assert await api.inbox() == ["$real"]


async def test_unreadable_key_counts_are_ignored_not_kept(api: Api) -> None:
    """Key counts come again in every transaction: one bad shape is no dead letter each time."""
    body = {"events": [event("$a")], "device_one_time_keys_count": ["not", "an", "object"]}
    assert await api.put("t1", body) == (200, {})
    assert await api.put("t2", body | {"events": []}) == (200, {})
    assert await api.inbox() == ["$a"] and await api.store.dead_letters.count() == 0


async def test_a_transaction_id_the_homeserver_reuses_after_a_restart_is_not_a_replay(
    api: Api,
) -> None:
    """Synapse on SQLite numbers transactions anew after a restart: the same id with other
    events is a new transaction (losing it lost messages), the same body again a retry."""
    assert (await api.put("1", {"events": [event("$before")]}))[0] == 200
    assert (await api.put("1", {"events": [event("$before")]}))[0] == 200  # a retry
    assert await api.inbox() == ["$before"]
    assert (await api.put("1", {"events": [event("$after-restart")]}))[0] == 200
    assert await api.inbox() == ["$before", "$after-restart"]
