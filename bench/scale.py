"""Scale: start-up time and memory of the bridge on a store with many portals and ghosts."""

from __future__ import annotations

import asyncio
import logging
import time

from bench.harness import BenchHub, stop_bridge
from bench.populate import migrate, populate
from bench.procfs import memory_mb
from bench.results import StartupResult

log = logging.getLogger("bench")

SETTLE_SECONDS = 3.0
"""How long the bridge runs after ready before its peak RSS is read."""


async def _starts(
    hub: BenchHub, backend: str, url: str, portals: int, ghosts: int, starts: int
) -> StartupResult:
    seconds: list[float] = []
    rss = peak = 0.0
    for _ in range(starts):
        bridge = hub.other_bridge(f"scale-{backend}", url)
        began = time.perf_counter()
        await bridge.start(hub.as_port)
        seconds.append(time.perf_counter() - began)
        assert bridge.proc is not None
        rss, _ = memory_mb(bridge.proc.pid)
        await asyncio.sleep(SETTLE_SECONDS)
        _, peak = memory_mb(bridge.proc.pid)
        await stop_bridge(bridge)
    log.info(
        "scale %s %d portals %d ghosts: start %s s, RSS %.0f MB, peak %.0f MB",
        backend,
        portals,
        ghosts,
        ", ".join(f"{s:.2f}" for s in seconds),
        rss,
        peak,
    )
    return StartupResult(backend, portals, ghosts, seconds, rss, peak)


async def startup(
    hub: BenchHub, backend: str, url: str, *, portals: int, ghosts: int, starts: int
) -> list[StartupResult]:
    """Start-up on the empty (migrated) store, then on the same store filled.

    The main bridge must be stopped: these bridges take its appservice port.
    """
    await migrate(url)
    empty = await _starts(hub, backend, url, 0, 0, starts)
    filled_in = await populate(url, portals, ghosts)
    log.info(
        "scale %s: wrote %d portals and %d ghosts in %.1f s", backend, portals, ghosts, filled_in
    )
    full = await _starts(hub, backend, url, portals, ghosts, starts)
    full.populate_seconds = filled_in
    return [empty, full]
