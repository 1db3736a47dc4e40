"""The hub end to end, the appservice side: transactions from Synapse (replays, bad ones),
the inbox across a crash, echoes, health and metrics (real Synapse, the real bridge, the
reference network)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Hub
from tests.e2e.hub import eventually
from tests.e2e.reference_portal import _body, _management_room, _portal

pytestmark = pytest.mark.e2e


async def test_replayed_transaction_is_not_processed_twice(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)
    url = f"http://127.0.0.1:{hub.as_port}/_matrix/app/v1/transactions"
    headers = {"Authorization": f"Bearer {hub.hs_token}"}

    def txn(event_id: str, body: str) -> dict[str, Any]:
        return {
            "events": [
                {
                    "event_id": event_id,
                    "room_id": room_id,
                    "sender": alice.mxid,
                    "type": "m.room.message",
                    "origin_server_ts": 1,
                    "content": {"msgtype": "m.text", "body": body},
                }
            ]
        }

    async with aiohttp.ClientSession() as http:
        async with http.put(
            f"{url}/replay-{chat}", json=txn(f"$first-{chat}", "first"), headers=headers
        ) as resp:
            assert resp.status == 200
        # The same transaction again (the homeserver retrying it): nothing new.
        async with http.put(
            f"{url}/replay-{chat}", json=txn(f"$first-{chat}", "first"), headers=headers
        ) as resp:
            assert resp.status == 200
        # The same id with other events: Synapse numbers transactions anew after a restart, so
        # this is a new transaction, not a replay (it used to be dropped, losing messages).
        async with http.put(
            f"{url}/replay-{chat}", json=txn(f"$second-{chat}", "second"), headers=headers
        ) as resp:
            assert resp.status == 200
        async with http.put(
            f"{url}/after-{chat}", json=txn(f"$third-{chat}", "third"), headers=headers
        ) as resp:
            assert resp.status == 200
    await hub.remote.wait_action(
        lambda a: a.kind == "send" and a.body["idempotency_key"] == f"$third-{chat}"
    )
    keys = [
        a.body["idempotency_key"]
        for a in hub.remote.actions
        if a.kind == "send" and a.body["chat"] == chat
    ]
    assert keys == [f"$first-{chat}", f"$second-{chat}", f"$third-{chat}"]
    assert hub.remote.send_attempts[f"$first-{chat}"] == 1


@pytest.mark.parametrize(
    ("headers", "body", "status", "errcode"),
    [
        ({"Authorization": "Bearer wrong-token"}, b'{"events": []}', 403, "M_FORBIDDEN"),
        ({}, b'{"events": []}', 401, "M_UNAUTHORIZED"),
        (None, b'{"events": [', 400, "M_NOT_JSON"),
        (None, b'{"events": "nope"}', 400, "M_BAD_JSON"),
        (None, b"[]", 400, "M_BAD_JSON"),
        (None, b"[" * 100_000, 400, "M_NOT_JSON"),
    ],
)
async def test_bad_transactions_are_refused_and_store_nothing(
    hub: Hub, headers: dict[str, str] | None, body: bytes, status: int, errcode: str
) -> None:
    txn_id = f"bad-{status}-{errcode}-{len(body)}-{len(headers or {'x': 1})}"
    if headers is None:
        headers = {"Authorization": f"Bearer {hub.hs_token}"}
    url = f"http://127.0.0.1:{hub.as_port}/_matrix/app/v1/transactions/{txn_id}"
    async with aiohttp.ClientSession() as http, http.put(url, data=body, headers=headers) as resp:
        assert resp.status == status
        assert (await resp.json())["errcode"] == errcode
    assert hub.bridge.query("SELECT count(*) FROM as_transaction WHERE txn_id = ?", txn_id) == [
        (0,)
    ]
    assert hub.bridge.query("SELECT count(*) FROM inbox WHERE txn_id = ?", txn_id) == [(0,)]


async def test_crash_with_events_in_the_inbox_processes_each_exactly_once(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)
    hub.remote.paused = True  # the network is down: events stay in the inbox, retrying
    try:
        event_ids = [await alice.send_text(room_id, f"during outage {i}") for i in range(5)]
        await eventually(
            lambda: (
                {
                    e
                    for (e,) in hub.bridge.query(
                        "SELECT event_id FROM inbox WHERE room_id = ?", room_id
                    )
                }
                >= set(event_ids)
            ),
            "the events to reach the inbox",
        )
        hub.bridge.kill()
    finally:
        hub.remote.paused = False
    await hub.bridge.start(hub.as_port)
    for event_id in event_ids:
        await hub.remote.wait_action(
            lambda a, e=event_id: a.kind == "send" and a.body["idempotency_key"] == e, timeout=30
        )
    assert [hub.remote.send_attempts[e] for e in event_ids] == [1] * 5
    keys = [
        a.body["idempotency_key"]
        for a in hub.remote.actions
        if a.kind == "send" and a.body["chat"] == chat
    ]
    assert [k for k in keys if k in event_ids] == event_ids  # order kept
    await eventually(
        lambda: hub.bridge.query("SELECT count(*) FROM inbox WHERE room_id = ?", room_id) == [(0,)],
        "the inbox to drain",
    )


async def test_health_and_metrics(hub: Hub) -> None:
    user = await hub.user("metrics")
    await _management_room(hub, user)  # at least one transaction since any restart
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{hub.as_port}/_pontis/health") as resp:
            assert resp.status == 200
            health = await resp.json()
        async with http.get(f"http://127.0.0.1:{hub.metrics_port}/metrics") as resp:
            metrics = await resp.text()
    assert health["ready"] is True
    assert health["clients"] == {
        "reference/shared": True,
        "xmpp/shared": True,
        "email/shared": True,
        "teams/shared": True,
    }
    stored = re.search(
        r'^pontis_appservice_transactions_total\{outcome="stored"\} (\S+)$', metrics, re.M
    )
    assert stored is not None and float(stored.group(1)) >= 1
    assert re.search(
        r'^pontis_matrix_events_total\{.*type="m.room.member".*\} [1-9]', metrics, re.M
    )
    assert "pontis_inbox_depth" in metrics
    assert hub.hs_token not in metrics and hub.hs_token not in json.dumps(health)
    assert hub.hs_token not in hub.bridge.log_path.read_text()
    assert hub.graph.app["clientSecret"] not in hub.bridge.log_path.read_text()


async def _metric(hub: Hub, name: str) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{hub.metrics_port}/metrics") as resp,
    ):
        found = re.search(rf"^{name} (\S+)$", await resp.text(), re.M)
    return float(found.group(1)) if found else 0.0


async def test_the_bridges_own_echoes_are_dropped_before_the_inbox(hub: Hub) -> None:
    alice = await hub.user("alice")
    chat, room_id, _ = await _portal(hub, alice)
    before = await _metric(hub, "pontis_echoes_dropped_total")
    for n in range(3):
        await hub.remote.push(
            {
                "kind": "message",
                "chat": chat,
                "sender": "bob",
                "id": f"{chat}-e{n}",
                "text": f"echo {n}",
            }
        )
    await alice.wait_for(lambda e: _body(e) == "echo 2", room_id=room_id)
    for _ in range(100):
        if await _metric(hub, "pontis_echoes_dropped_total") >= before + 3:
            break
        await asyncio.sleep(0.05)
    assert await _metric(hub, "pontis_echoes_dropped_total") >= before + 3
    # and they were never bridged back to the network
    assert not [a for a in hub.remote.actions if a.kind == "send" and a.body["chat"] == chat]
