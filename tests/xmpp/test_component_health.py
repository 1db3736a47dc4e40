"""Each XMPP component of a hub shows in ``/_pontis/health`` and the metrics on its own (issue
#14, item 6): connected or not, since when, why not, when it tries next, and never its secret."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry, generate_latest

from bridge.core import LoginID, SupportsHealthDetail
from bridge.core.health import client_details, health_response
from bridge.xmpp.client import XmppClient
from bridge.xmpp.component import Component
from bridge.xmpp.components import XmppClients
from bridge.xmpp.config import component_configs
from bridge.xmpp.link import LinkMetrics
from bridge.xmpp.routing import ComponentRoutes
from tests.xmpp.test_components import agency_b, section
from tests.xmpp.test_inbound import FakeContext, FakeMarks

SECRET = "Tr0ub4dor-b-secret"
STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"
LOG = logging.getLogger("test.xmpp.component_health")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # 2027-01-15T08:00:00Z

    def __call__(self) -> float:
        return self.now


class Context(FakeContext):
    log = LOG

    def __init__(self) -> None:
        super().__init__([])
        self.states: list[tuple[str, bool, str]] = []

        async def no_portals() -> list[Any]:
            return []

        self.store.list_portals = no_portals  # type: ignore[attr-defined]

    def set_client_state(self, login_id: LoginID, *, connected: bool, message: str = "") -> None:
        self.states.append((login_id, connected, message))


def stream_error(component: Component, condition: str, text: str) -> Any:
    raw = (f"<stream:error xmlns:stream='http://etherx.jabber.org/streams'><{condition} "
           f"xmlns='{STREAMS}'/><text xmlns='{STREAMS}'>{text}</text></stream:error>")  # fmt: skip
    return component.xmpp._build_stanza(ET.fromstring(raw))


async def refuse(component: Component, condition: str, text: str = "") -> None:
    """The server accepts the connection, answers with a stream error and closes the stream."""
    component._on_stream_error(stream_error(component, condition, text))
    await component._disconnected("")


async def _no_wait(_: float) -> None:
    return None


async def stop(*components: Component) -> None:
    for component in components:
        await component.stop()
    await asyncio.sleep(0.01)  # slixmpp's "disconnected" handlers, scheduled by the stop


@pytest_asyncio.fixture
async def hub() -> tuple[XmppClients, Context, Clock]:
    """Agency A's component and agency B's, B's configured with a secret its server refuses."""
    configs = component_configs(section(agency_b(secret=SECRET)))
    routes = ComponentRoutes(configs)
    ctx, clock = Context(), Clock()
    clients = [XmppClient(ctx, cfg, FakeMarks(), routes.jid_for) for cfg in configs]  # type: ignore[arg-type]
    for client in clients:
        for component in (client.component, client.hosted.component if client.hosted else None):
            if component is not None:  # the clock of the test, and no real reconnects
                component._clock, component._sleep = clock, _no_wait
                component.xmpp.connect = lambda *_, **__: None  # type: ignore[method-assign]
    return XmppClients(ctx, routes, clients, clock=clock), ctx, clock


def by_domain(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["domain"]: entry for entry in detail["components"]}


async def test_a_component_with_a_wrong_secret_shows_down_with_the_reason_and_no_secret(
    hub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Hostile: the server echoes the secret in its stream error text. The operator sees agency
    B's component down with the condition and when it tries again, A's up, and the secret
    nowhere: not in health, not in the metrics, not in the log."""
    clients, ctx, clock = hub
    a, b = clients.clients
    caplog.set_level(logging.DEBUG)
    for client in clients.clients:
        client.component.start()
    try:
        await a.component._session_start(None)
        clock.now += 60
        await refuse(b.component, "not-authorized", f"handshake {SECRET} does not match")
        detail = clients.health_detail()
        registry = CollectorRegistry()
        registry.register(LinkMetrics(clients.links))
        metrics = generate_latest(registry).decode()
    finally:
        await stop(a.component, b.component)
    components = by_domain(detail)
    assert components["matrix.a.test"] == {
        "domain": "matrix.a.test", "connected": True, "since": "2027-01-15T08:00:00Z",
        "serves": "users",
    }  # fmt: skip
    down = components["matrix.b.test"]
    assert down["connected"] is False and down["serves"] == "users"
    assert down["error"].startswith("refused by the server: stream error not-authorized")
    assert down["since"] == "2027-01-15T08:00:00Z"  # trying since it started, never connected
    assert (down["next_attempt"], down["next_attempt_in_seconds"]) == ("2027-01-15T08:01:01Z", 1)
    assert components["rooms.b.test"]["serves"] == "rooms"  # each rooms domain shows too
    assert 'pontis_xmpp_component_connected{domain="matrix.a.test",serves="users"} 1.0' in metrics
    assert 'pontis_xmpp_component_connected{domain="matrix.b.test",serves="users"} 0.0' in metrics
    # The core's per-client series and the hub's state say the same, with the reason.
    assert ("matrix.b.test", False) in [(login, up) for login, up, _ in ctx.states]
    assert ctx.states[-1][:2] == ("", False) and "not-authorized" in ctx.states[-1][2]
    everything = json.dumps(detail) + metrics + caplog.text + repr(ctx.states)
    assert SECRET not in everything


async def test_a_refused_component_backs_off_and_health_shows_each_next_attempt(
    hub: Any,
) -> None:
    """A domain the server does not know: the waits double (existing behaviour), health always
    shows the next one, and the hub is told once, not at every attempt."""
    clients, ctx, clock = hub
    b = clients.clients[1].component
    b.start()
    try:
        shown = []
        for _ in range(4):
            await refuse(b, "host-unknown")
            entry = by_domain(clients.health_detail())["matrix.b.test"]
            shown.append((entry["next_attempt_in_seconds"], entry["failed_attempts"]))
            clock.now += entry["next_attempt_in_seconds"]
    finally:
        await stop(b)
    assert shown == [(1, 1), (2, 2), (4, 3), (8, 4)]
    reported = [s for s in ctx.states if s[0] == "matrix.b.test"]
    assert reported == [
        ("matrix.b.test", False, "refused by the server: stream error host-unknown")
    ]


async def test_an_unreachable_server_shows_the_error_and_slixmpp_s_next_attempt(hub: Any) -> None:
    clients, _, clock = hub
    b = clients.clients[1].component
    b.start()
    try:
        await b._connection_failed(ConnectionRefusedError(111, "Connect call failed"))
        b._reconnect_delay(3.0)  # slixmpp tells its wait as the next attempt begins waiting
        entry = by_domain(clients.health_detail())["matrix.b.test"]
        clock.now += 4  # the attempt is under way: no next one to show
        later = by_domain(clients.health_detail())["matrix.b.test"]
    finally:
        await stop(b)
    assert entry["error"] == "cannot connect to 10.0.0.2:5348: [Errno 111] Connect call failed"
    assert entry["next_attempt_in_seconds"] == 3
    assert "next_attempt" not in later and later["connected"] is False


async def test_a_component_up_again_clears_the_error(hub: Any) -> None:
    clients, _, clock = hub
    b = clients.clients[1].component
    b.start()
    try:
        await refuse(b, "host-unknown")
        clock.now += 30
        await b._session_start(None)
        entry = by_domain(clients.health_detail())["matrix.b.test"]
    finally:
        await stop(b)
    assert entry == {"domain": "matrix.b.test", "connected": True,
                     "since": "2027-01-15T08:00:30Z", "serves": "users"}  # fmt: skip


async def test_the_health_endpoint_shows_the_detail_beside_the_old_keys(hub: Any) -> None:
    clients, _, _ = hub
    assert isinstance(clients, SupportsHealthDetail)

    class Broken:
        def health_detail(self) -> dict[str, Any]:
            raise RuntimeError("bug")

    details = client_details(
        {"xmpp/shared": clients, "teams/shared": object(), "email/shared": Broken()}, LOG
    )
    resp = await health_response(started=True, monitor=None, details=details,
                                 clients={"xmpp/shared": False, "teams/shared": True})  # fmt: skip
    assert resp.text is not None
    body = json.loads(resp.text)
    assert resp.status == 200 and body["clients"] == {"xmpp/shared": False, "teams/shared": True}
    assert body["dependencies"]["networks"]["xmpp"] == {"clients": 1, "connected": 0}
    assert [c["domain"] for c in body["client_details"]["xmpp/shared"]["components"]] == [
        "matrix.a.test", "rooms.a.test", "matrix.b.test", "rooms.b.test"]  # fmt: skip
    assert body["client_details"]["email/shared"] == {"error": "no detail: bug"}
    assert "teams/shared" not in body["client_details"]


async def test_a_component_that_fails_to_start_shows_why_and_when_it_starts_again(
    hub: Any,
) -> None:
    clients, ctx, _ = hub
    a, b = clients.clients

    async def started() -> None:
        a.component.link.up(clients._clock())

    async def fails() -> None:
        raise OSError("database unreachable")

    a.connect, b.connect = started, fails
    ctx.background = lambda coro, name: asyncio.create_task(coro, name=name)
    await clients.connect()
    try:
        components = by_domain(clients.health_detail())
    finally:
        await clients.disconnect()
    assert components["matrix.a.test"]["connected"] is True
    for domain in ("matrix.b.test", "rooms.b.test"):  # neither stream was started
        assert components[domain] | {"serves": ""} == {
            "domain": domain, "connected": False, "since": "2027-01-15T08:00:00Z",
            "error": "failed to start: database unreachable", "failed_attempts": 1,
            "next_attempt": "2027-01-15T08:00:05Z", "next_attempt_in_seconds": 5.0, "serves": "",
        }  # fmt: skip
