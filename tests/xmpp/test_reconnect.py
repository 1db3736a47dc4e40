"""How soon the component tries again (issue #14, item 6): at once after a session that had
started, with a doubling wait while the server refuses it before the session starts."""

from __future__ import annotations

import logging
from typing import Any

from bridge.xmpp.component import (
    MAX_REFUSED_WAIT,
    RECONNECT_WAIT,
    Component,
    reconnect_delay,
)
from tests.xmpp.test_inbound import DOMAIN, make_cfg


async def _nothing(*_: Any) -> None:
    return None


def test_refused_attempts_back_off_from_one_second_to_five_minutes() -> None:
    assert reconnect_delay(0) == RECONNECT_WAIT
    assert [reconnect_delay(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert reconnect_delay(10_000) == MAX_REFUSED_WAIT


async def test_a_refusing_server_is_asked_less_and_less_often_until_a_session_starts() -> None:
    waits: list[float] = []
    connects: list[int] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    component = Component(DOMAIN, make_cfg(), logging.getLogger("test.xmpp.reconnect"),
                          on_stanza=_nothing, on_state=_nothing, sleep=sleep)  # fmt: skip
    component.xmpp.connect = lambda *_, **__: connects.append(1)  # type: ignore[method-assign]
    for _ in range(5):  # the handshake is refused: a stream error, then the stream closes
        component.xmpp.event("stream_error", {"condition": "not-authorized"})
        await component._disconnected("End of stream")
    assert waits == [1, 2, 4, 8, 16] and len(connects) == 5

    await component._session_start(None)  # the operator fixed the secret
    await component._disconnected("End of stream")  # a later outage: back at once
    assert waits[-1] == RECONNECT_WAIT
    await component._disconnected("End of stream")  # refused again: from 1 s
    assert waits[-1] == 1

    component._stopping = True
    await component._disconnected("stopped")
    assert len(connects) == 7  # stopping: no new attempt
