"""Burst: many portals, many messages each, all pushed from the remote side at once."""

from __future__ import annotations

import asyncio
import logging
import time

from bench.harness import BenchHub
from bench.paths.reference import OpenPortal, open_portals, push_message
from bench.procfs import CpuMeter, memory_mb
from bench.results import BurstResult
from bench.timing import TimedMatrixUser

log = logging.getLogger("bench")


def _token(portal: OpenPortal, index: int) -> str:
    return f"burst {portal.chat} {index}"


def _out_of_order(user: TimedMatrixUser, portals: list[OpenPortal], per_portal: int) -> list[str]:
    """The chats whose messages the Matrix user saw in another order than they were sent."""
    wrong = []
    for portal in portals:
        prefix = f"burst {portal.chat} "
        seen = [
            body
            for e in user.events
            if e["room_id"] == portal.room_id
            and isinstance(body := e.get("content", {}).get("body"), str)
            and body.startswith(prefix)
        ]
        if seen != [_token(portal, i) for i in range(per_portal)]:
            wrong.append(portal.chat)
    return wrong


async def burst(
    hub: BenchHub, user: TimedMatrixUser, portal_count: int, per_portal: int
) -> BurstResult:
    portals = await open_portals(hub, user, "burst-chat-", portal_count, wait_seconds=300)
    log.info("burst: %d portals open; pushing %d messages", portal_count, portal_count * per_portal)
    tokens = [_token(p, i) for i in range(per_portal) for p in portals]
    arrivals = [user.arrivals.expect(token) for token in tokens]
    bridge, synapse = CpuMeter(hub.bridge_pid), CpuMeter(hub.synapse_pid)
    timeout = max(180.0, len(tokens) / 10)
    with bridge.measure(), synapse.measure():
        began = time.perf_counter()
        for index in range(per_portal):
            for portal in portals:
                await push_message(hub.remote, portal, _token(portal, index))
        done, _ = await asyncio.wait(arrivals, timeout=timeout)
    delivered = [f.result() for f in done]
    seconds = (max(delivered) if delivered else time.perf_counter()) - began
    for future in arrivals:
        future.cancel()
    return BurstResult(
        portals=portal_count,
        per_portal=per_portal,
        delivered=len(delivered),
        out_of_order_portals=_out_of_order(user, portals, per_portal),
        seconds=seconds,
        bridge_cpu=bridge.seconds,
        synapse_cpu=synapse.seconds,
        bridge_peak_rss_mb=memory_mb(hub.bridge_pid)[1],
    )
