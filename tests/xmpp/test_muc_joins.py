"""Two joins of one room at once (an invitation, ``bridge xmpp``, an alias lookup) share one
join: before, the second replaced the first's pending answer, and the first waited its whole
timeout for an answer that had already come."""

from __future__ import annotations

import asyncio

import pytest

from bridge.xmpp.muc import JoinError, MucTracker
from tests.xmpp.test_muc_presence import LISTENER, ROOM, presence


async def test_concurrent_joins_share_one_answer() -> None:
    mucs = MucTracker()
    mucs.room(ROOM)
    first, new = mucs.expect_join(ROOM, LISTENER)
    second, again = mucs.expect_join(ROOM, LISTENER)
    assert (new, again) == (True, False)  # only the first sends the join
    assert second is first

    mucs.on_presence(presence(f"{ROOM}/Matrix bridge", "available", ("110",)))
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert mucs.room(ROOM).nicks[LISTENER] == "Matrix bridge"


async def test_a_finished_join_does_not_answer_the_next() -> None:
    mucs = MucTracker()
    mucs.room(ROOM)
    first, _ = mucs.expect_join(ROOM, LISTENER)
    mucs.on_presence(presence(f"{ROOM}/Matrix bridge", "available", ("110",)))
    await first
    later, new = mucs.expect_join(ROOM, LISTENER)
    assert new and not later.done()  # a rejoin after a kick waits for its own answer


async def test_a_timed_out_join_fails_every_waiter_and_starts_afresh() -> None:
    mucs = MucTracker()
    mucs.room(ROOM)
    first, _ = mucs.expect_join(ROOM, LISTENER)
    mucs.join_timed_out(ROOM, LISTENER)
    with pytest.raises(JoinError, match="remote-server-timeout"):
        await first
    _, new = mucs.expect_join(ROOM, LISTENER)
    assert new
