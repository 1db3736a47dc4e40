from __future__ import annotations

import asyncio
import logging

from bridge.core.queue import OrderedQueues


async def test_order_is_kept_per_key_and_keys_run_concurrently() -> None:
    queues = OrderedQueues(maxsize=100, log=logging.getLogger("test"))
    seen: dict[str, list[int]] = {"a": [], "b": []}
    a_blocked = asyncio.Event()
    release = asyncio.Event()

    def job(key: str, n: int, block: bool = False):  # type: ignore[no-untyped-def]
        async def run() -> None:
            if block:
                a_blocked.set()
                await release.wait()
            await asyncio.sleep(0.001 * (5 - n % 5))  # later jobs finish faster if run in parallel
            seen[key].append(n)

        return run

    await queues.put("a", job("a", 0, block=True))
    for n in range(1, 20):
        await queues.put("a", job("a", n))
    await a_blocked.wait()
    for n in range(20):
        await queues.put("b", job("b", n))
    await asyncio.wait_for(_until(lambda: len(seen["b"]) == 20), 5)
    assert seen["a"] == []  # "b" was not held up behind the blocked "a"
    release.set()
    await queues.drain()
    assert seen == {"a": list(range(20)), "b": list(range(20))}


async def test_a_failing_job_does_not_stop_its_queue() -> None:
    queues = OrderedQueues(maxsize=10, log=logging.getLogger("test"))
    done: list[int] = []

    async def boom() -> None:
        raise RuntimeError("bug")

    async def ok() -> None:
        done.append(1)

    await queues.put("k", boom)
    await queues.put("k", ok)
    await queues.drain()
    assert done == [1]


async def test_a_full_queue_makes_the_producer_wait() -> None:
    queues = OrderedQueues(maxsize=2, log=logging.getLogger("test"))
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    for _ in range(3):  # one running, two queued
        await queues.put("k", slow)
    blocked = asyncio.create_task(queues.put("k", slow))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    gate.set()
    await asyncio.wait_for(blocked, 2)
    await queues.drain()


async def _until(check) -> None:  # type: ignore[no-untyped-def]
    while not check():
        await asyncio.sleep(0.005)
