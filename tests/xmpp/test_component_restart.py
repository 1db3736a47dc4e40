"""A component that fails to start (its store read fails) is reported down and started again,
with growing pauses, while the others run."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bridge.core import LoginID
from bridge.xmpp import components
from bridge.xmpp.components import XmppClients
from bridge.xmpp.config import component_configs
from bridge.xmpp.routing import ComponentRoutes
from tests.xmpp.test_components import agency_b, section


class Flaky:
    """A component client whose first ``failures`` starts fail."""

    def __init__(self, failures: int) -> None:
        self.failures, self.starts, self.stops = failures, 0, 0
        self.report_state: Any = None
        self.invitations = type("I", (), {})()

    async def connect(self) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            raise OSError("database unreachable")
        self.report_state(True, "")

    async def disconnect(self) -> None:
        self.stops += 1


class Context:
    log = logging.getLogger("test.xmpp.restart")

    def __init__(self) -> None:
        self.states: list[tuple[str, bool, str]] = []

    def set_client_state(self, login_id: LoginID, *, connected: bool, message: str = "") -> None:
        self.states.append((login_id, connected, message))

    def background(self, coro: Any, *, name: str) -> asyncio.Task[Any]:
        return asyncio.create_task(coro, name=name)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(components, "RETRY_FIRST", 0.01)


async def test_a_component_that_fails_to_start_says_so_and_starts_later(fast: None) -> None:
    ctx = Context()
    routes = ComponentRoutes(component_configs(section(agency_b(secret="b-secret"))))
    good, flaky = Flaky(0), Flaky(2)
    hub = XmppClients(ctx, routes, [good, flaky])  # type: ignore[arg-type]
    await hub.connect()
    assert ("matrix.b.test", False) in [(s[0], s[1]) for s in ctx.states]
    assert any("failed to start (database unreachable)" in s[2] for s in ctx.states)
    for _ in range(100):
        if ctx.states[-1] == ("", True, ""):
            break
        await asyncio.sleep(0.01)
    assert flaky.starts == 3 and good.starts == 1
    assert ctx.states[-1] == ("", True, "")  # the hub is up once the late one is


async def test_stopping_the_bridge_stops_the_retries(fast: None) -> None:
    ctx = Context()
    routes = ComponentRoutes(component_configs(section()))
    never = Flaky(1000)
    hub = XmppClients(ctx, routes, [never])  # type: ignore[arg-type]
    await hub.connect()
    await hub.disconnect()
    starts = never.starts
    await asyncio.sleep(0.1)
    assert never.starts == starts and ctx.states[-1][1] is False
