"""Metrics say how much waits in each direction and network, how old the oldest is, and how
many dead letters are kept (both engines)."""

from __future__ import annotations

import logging

from prometheus_client import generate_latest

from bridge.core.health import refresh_metrics
from bridge.core.ids import NetworkID, PortalKey, RemoteChatID
from bridge.core.metrics import Metrics
from bridge.portal import InboxItem, Portal, Store
from bridge.portal.backlog import read_backlog
from bridge.portal.models import RemoteInput
from tests.store_fixtures import StoreTarget

T0 = 1_800_000_000_000
XMPP, TEAMS = NetworkID("xmpp"), NetworkID("teams")


def pdu(n: int, room: str) -> InboxItem:
    return InboxItem("pdu", f"$e{n}", room, {"type": "m.room.message"})


async def test_backlog_per_direction_and_network(store_target: StoreTarget) -> None:
    now = [T0]
    store = await store_target.open(clock=lambda: now[0])
    try:
        await store.save_portal(Portal(XMPP, RemoteChatID("room@muc"), mxid="!x:hub"))
        await store.save_portal(Portal(TEAMS, RemoteChatID("19:chat"), mxid="!t:hub"))
        # Matrix → network: two for XMPP (the older at T0), one for Teams, one not a portal.
        await store.store_transaction("t1", [pdu(1, "!x:hub")])
        now[0] += 5_000
        await store.store_transaction("t2", [pdu(2, "!x:hub"), pdu(3, "!t:hub")])
        await store.store_transaction("t3", [pdu(4, "!management:hub")])
        (parked,) = await store.store_transaction("t4", [pdu(5, "!t:hub")]) or []
        await store.park_inbox(parked.id, "M_FORBIDDEN")
        # Network → Matrix: one Teams input waiting since T0 + 5 s, one parked for XMPP.
        key = PortalKey(TEAMS, RemoteChatID("19:chat"))
        await store.remote_inbox.add(RemoteInput(portal=key, kind="message", payload={}))
        row = await store.remote_inbox.add(
            RemoteInput(portal=PortalKey(XMPP, RemoteChatID("room@muc")), kind="m", payload={})
        )
        assert row is not None
        await store.remote_inbox.park(row, "refused")

        backlog = await read_backlog(store)
        assert {n: (p.count, p.oldest_ms) for n, p in backlog.to_network.items()} == {
            "xmpp": (2, T0), "teams": (1, T0 + 5_000), "": (1, T0 + 5_000),
        }  # fmt: skip
        assert {n: (p.count, p.oldest_ms) for n, p in backlog.to_matrix.items()} == {
            "teams": (1, T0 + 5_000)
        }
        assert backlog.dead_letters == {
            ("matrix_to_network", "teams"): 1,
            ("network_to_matrix", "xmpp"): 1,
        }

        metrics = Metrics()
        metrics.show_backlog(backlog, ["xmpp", "teams", "email"], now_ms=T0 + 65_000)

        def value(name: str, direction: str, network: str) -> float | None:
            return metrics.registry.get_sample_value(
                name, {"direction": direction, "network": network}
            )

        assert value("pontis_oldest_pending_seconds", "matrix_to_network", "xmpp") == 65
        assert value("pontis_oldest_pending_seconds", "network_to_matrix", "teams") == 60
        assert value("pontis_oldest_pending_seconds", "network_to_matrix", "email") == 0
        assert value("pontis_pending_events", "matrix_to_network", "xmpp") == 2
        assert value("pontis_pending_events", "matrix_to_network", "") == 1
        assert value("pontis_pending_events", "network_to_matrix", "xmpp") == 0
        assert value("pontis_dead_letters_kept", "matrix_to_network", "teams") == 1
        assert value("pontis_dead_letters_kept", "network_to_matrix", "xmpp") == 1
        assert value("pontis_dead_letters_kept", "network_to_matrix", "teams") == 0
        assert metrics.registry.get_sample_value("pontis_inbox_depth") == 4

        # Once drained, the series stay, at 0.
        for pending in await store.pending_inbox():
            await store.finish_inbox(pending.id)
        await refresh_metrics(metrics, store, ["xmpp", "teams"], logging.getLogger("test"))
        assert value("pontis_pending_events", "matrix_to_network", "xmpp") == 0
        assert value("pontis_oldest_pending_seconds", "matrix_to_network", "xmpp") == 0
        assert value("pontis_pending_events", "matrix_to_network", "") is None
    finally:
        await store.close()


async def test_build_info_and_process_metrics() -> None:
    text = generate_latest(Metrics().registry).decode()
    assert "pontis_build_info{" in text
    assert "process_resident_memory_bytes" in text  # Linux, where the bridge runs
    assert "python_info" in text


async def test_a_database_away_keeps_the_last_values(store: Store) -> None:
    metrics = Metrics()
    await refresh_metrics(metrics, store, ["xmpp"], logging.getLogger("test"))
    await store.close()
    await refresh_metrics(metrics, store, ["xmpp"], logging.getLogger("test"))  # no raise
    assert (
        metrics.registry.get_sample_value(
            "pontis_pending_events", {"direction": "network_to_matrix", "network": "xmpp"}
        )
        == 0
    )
