"""Sending tokens through a path in a closed loop and timing each one end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bench.timing import Arrivals

Send = Callable[[str], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Run:
    latencies: tuple[float, ...]
    seconds: float
    """From the first send to the last arrival."""

    @property
    def messages(self) -> int:
        return len(self.latencies)


async def closed_loop(
    send: Send, arrivals: Arrivals, tokens: Sequence[str], *, window: int, wait_seconds: float = 60
) -> Run:
    """Send every token, at most ``window`` in flight; each one's latency runs from just
    before its send to its arrival on the receiving side."""
    slots = asyncio.Semaphore(window)
    latencies: list[float] = []

    async def one(token: str) -> None:
        async with slots:
            arrival = arrivals.expect(token)
            sent = time.perf_counter()
            await send(token)
            try:
                arrived = await asyncio.wait_for(arrival, wait_seconds)
            except TimeoutError:
                raise RuntimeError(f"{token!r} did not arrive within {wait_seconds} s") from None
            latencies.append(arrived - sent)

    began = time.perf_counter()
    await asyncio.gather(*(one(token) for token in tokens))
    return Run(tuple(latencies), time.perf_counter() - began)
