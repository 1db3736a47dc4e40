"""Several XMPP components in one hub (issue #14): the config, which component serves which
JID, and what a component does with a message meant for another one."""

from __future__ import annotations

import inspect
import logging
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import Message
from slixmpp.xmlstream import StanzaBase

from bridge.core import LoginID, NotFound, RemoteUserID
from bridge.core.config import ConfigError
from bridge.xmpp.client import XmppClient
from bridge.xmpp.components import XmppClients, _forward
from bridge.xmpp.config import component_configs
from bridge.xmpp.ids import muc_key
from bridge.xmpp.routing import ComponentRoutes
from tests.xmpp.test_inbound import FakeContext, FakeMarks

NS = "jabber:component:accept"


def section(*components: dict[str, Any]) -> dict[str, Any]:
    """``connectors.xmpp`` as the core hands it over: the template's defaults merged in."""
    return {
        "enabled": True,
        "component": {"jid": "Matrix.A.test", "host": "10.0.0.1", "port": 5347, "secret": "a"},
        "rooms_domain": "rooms.a.test", "upload_service": "", "muc_nick": "Matrix bridge",
        "history_on_join": 5, "max_file_mib": 1, "fetch_allow_private": [],
        "components": list(components),
    }  # fmt: skip


def agency_b(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "jid": "matrix.b.test", "host": "10.0.0.2", "port": 5348, "secret": "b",
        "rooms_domain": "rooms.b.test", "domains": ["b.test", "muc.b.test", "*.b-agency.test"],
    }  # fmt: skip
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def problems(sect: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        component_configs(sect)
    return [str(p) for p in err.value.problems]


# --- config ---------------------------------------------------------------------------------------


def test_the_single_component_form_is_one_default_component() -> None:
    (only,) = component_configs(section())
    assert (only.jid, only.host, only.rooms_domain, only.domains) == (
        "matrix.a.test", "10.0.0.1", "rooms.a.test", ())  # fmt: skip


def test_further_components_take_their_own_server_and_the_shared_settings() -> None:
    default, b = component_configs(
        section(
            agency_b(),
            agency_b(
                jid="matrix.c.test", rooms_domain=None, domains=["C.test"], host=None, port=None
            ),
        )
    )[:2]
    assert (b.jid, b.host, b.port, b.secret, b.rooms_domain) == (
        "matrix.b.test", "10.0.0.2", 5348, "b", "rooms.b.test")  # fmt: skip
    assert b.domains == ("b.test", "muc.b.test", "*.b-agency.test")
    assert (b.muc_nick, b.history_on_join) == (default.muc_nick, default.history_on_join)
    c = component_configs(
        section(
            agency_b(),
            agency_b(
                jid="matrix.c.test", rooms_domain=None, domains=["C.test"], host=None, port=None
            ),
        )
    )[2]
    assert (c.host, c.port, c.rooms_domain, c.domains) == ("10.0.0.1", 5347, "", ("c.test",))


def test_duplicate_domains_are_refused_naming_both_keys() -> None:
    found = problems(section(agency_b(jid="MATRIX.A.test", rooms_domain="rooms.a.test")))
    assert any(p.startswith("connectors.xmpp.components[0].jid: matrix.a.test")
               and "connectors.xmpp.component.jid" in p for p in found)  # fmt: skip
    assert any(p.startswith("connectors.xmpp.components[0].rooms_domain: rooms.a.test")
               and "connectors.xmpp.rooms_domain" in p for p in found)  # fmt: skip
    found = problems(section(agency_b(), agency_b(jid="matrix.c.test", rooms_domain="",
                                                  domains=["c.test", "B.test"])))  # fmt: skip
    assert found == ["connectors.xmpp.components[1].domains[1]: b.test is already given at "
                     "connectors.xmpp.components[0].domains[0]"]  # fmt: skip
    # A component cannot claim to reach another one's own domain.
    found = problems(section(agency_b(domains=["rooms.a.test"])))
    assert found[0].startswith("connectors.xmpp.components[0].domains[0]: rooms.a.test")


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        (agency_b(domains=None), "components[0].domains", "list the XMPP domains"),
        (agency_b(domains=[]), "components[0].domains", "list the XMPP domains"),
        (agency_b(domains=["b.test", "x@y"]), "components[0].domains[1]", "expected a domain"),
        (agency_b(jid=None), "components[0].jid", "expected a domain name"),
        (agency_b(jid="bob@b.test"), "components[0].jid", "expected a domain name"),
        (agency_b(port="5347"), "components[0].port", "expected a port number"),
        (agency_b(port=70000), "components[0].port", "expected a port number"),
        (agency_b(secret="generate"), "components[0].secret", "component_secret"),
        (agency_b(secret=None), "components[0].secret", "component_secret"),
        (agency_b(colour="blue"), "components[0].colour", "unknown key"),
        ("matrix.b.test", "components[0]", "expected a mapping"),
    ],
)
def test_a_bad_entry_names_its_key(entry: Any, path: str, message: str) -> None:
    found = problems(section(entry))
    assert any(p.startswith(f"connectors.xmpp.{path}: ") and message in p for p in found), found


def test_components_must_be_a_list() -> None:
    sect = section() | {"components": {"jid": "matrix.b.test"}}
    assert problems(sect) == ["connectors.xmpp.components: expected a list"]


# --- routing --------------------------------------------------------------------------------------


@pytest.fixture
def routes() -> ComponentRoutes:
    c = agency_b(jid="matrix.c.test", rooms_domain="", domains=["*.deep.b-agency.test"])
    return ComponentRoutes(component_configs(section(agency_b(), c)))


@pytest.mark.parametrize(
    ("remote_id", "index"),
    [
        ("bob@b.test", 1), ("bob@B.TEST/phone", 1), ("team@muc.b.test", 1),
        ("x@sub.b-agency.test", 1), ("x@deep.b-agency.test", 1),
        ("x@a.deep.b-agency.test", 2),  # the longest suffix wins
        ("x@b-agency.test", 0),  # "*.x" covers subdomains only
        ("room\\3ahub.test@rooms.b.test", 1),  # a room B hosts
        ("room\\3ahub.test@rooms.a.test", 0),
        ("carol@elsewhere.test", 0), ("team@muc.a.test", 0),  # the default
        ("not a jid", 0), ("", 0),
    ],
)  # fmt: skip
def test_each_jid_goes_through_the_component_that_serves_its_domain(
    routes: ComponentRoutes, remote_id: str, index: int
) -> None:
    assert routes.index_of(remote_id) == index


class Recorder:
    """An XmppClient that writes down what it was asked."""

    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name, self.calls = name, calls
        self.report_state: Any = None

    def __getattr__(self, method: str) -> Any:
        async def record(*args: Any, **kwargs: Any) -> str:
            self.calls.append((self.name, method))
            return "sent"

        return record


class Event:
    def __init__(self, remote_id: str) -> None:
        self.portal = muc_key(remote_id)


class StateContext:
    log = logging.getLogger("test.xmpp.components")

    def __init__(self) -> None:
        self.states: list[tuple[str, bool, str]] = []

    def set_client_state(self, login_id: LoginID, *, connected: bool, message: str = "") -> None:
        self.states.append((login_id, connected, message))


@pytest.fixture
def hub(routes: ComponentRoutes) -> tuple[XmppClients, list[tuple[str, str]], StateContext]:
    calls: list[tuple[str, str]] = []
    ctx = StateContext()
    clients = [Recorder(n, calls) for n in ("a", "b", "c")]
    return XmppClients(ctx, routes, clients), calls, ctx  # type: ignore[arg-type]


async def test_matrix_events_go_to_the_component_of_their_portal(hub: Any) -> None:
    clients, calls, _ = hub
    await clients.handle_matrix_message(Event("bob@b.test"))
    await clients.handle_matrix_reaction(Event("carol@elsewhere.test"))
    await clients.handle_matrix_power_levels(muc_key("room\\3ahub.test@rooms.b.test"), {}, [])
    await clients.get_chat_info(muc_key("team@muc.b.test"))
    await clients.get_user_info(RemoteUserID("x@a.deep.b-agency.test"))
    await clients.bridge_room("team@muc.a.test", "@alice:hub.test")
    assert calls == [("b", "handle_matrix_message"), ("a", "handle_matrix_reaction"),
                     ("b", "handle_matrix_power_levels"), ("b", "get_chat_info"),
                     ("c", "get_user_info"), ("a", "bridge_room")]  # fmt: skip


async def test_what_is_about_no_chat_reaches_every_component(hub: Any) -> None:
    """A Matrix user's presence: each component tells its own XMPP contacts."""
    clients, calls, _ = hub
    await _forward("handle_matrix_presence")(clients, SimpleNamespace(sender="@alice:hub.test"))
    assert sorted(calls) == [("a", "handle_matrix_presence"), ("b", "handle_matrix_presence"),
                             ("c", "handle_matrix_presence")]  # fmt: skip


async def test_a_dm_with_the_bridge_s_own_jids_is_refused(hub: Any) -> None:
    clients, calls, _ = hub
    for own in ("alice\\3ahub.test@matrix.b.test", "room\\3ahub.test@rooms.b.test",
                "x@MATRIX.A.test"):  # fmt: skip
        with pytest.raises(NotFound):
            await clients.start_direct_chat(RemoteUserID(own), "@alice:hub.test")
    await clients.start_direct_chat(RemoteUserID("bob@b.test"), "@alice:hub.test")
    assert calls == [("b", "start_direct_chat")]


def test_every_call_of_a_component_client_reaches_one() -> None:
    """A method added to XmppClient for the core is on XmppClients too, or the core would find
    the capability missing as soon as a hub had the facade in front."""
    public = {name for name, member in inspect.getmembers(XmppClient, inspect.iscoroutinefunction)
              if not name.startswith("_")}  # fmt: skip
    missing = {name for name in public if not hasattr(XmppClients, name)}
    assert not missing, f"forward these in bridge/xmpp/components.py: {sorted(missing)}"


def test_each_component_reports_its_state_and_the_shared_one_names_who_is_down(hub: Any) -> None:
    clients, _, ctx = hub
    for client in clients.clients:
        client.report_state(True, "")
    clients.clients[1].report_state(False, "disconnected: connection refused")
    assert ctx.states[-2:] == [
        ("matrix.b.test", False, "disconnected: connection refused"),
        ("", False, "matrix.b.test: disconnected: connection refused"),
    ]
    clients.clients[1].report_state(True, "")
    assert ctx.states[-1] == ("", True, "")


# --- a component hears only what is meant for it --------------------------------------------------


@pytest.fixture
def component_a() -> tuple[XmppClient, FakeContext, list[StanzaBase]]:
    configs = component_configs(section(agency_b()) | {"rooms_domain": ""})
    routes = ComponentRoutes(configs)
    ctx = FakeContext([])
    client = XmppClient(ctx, configs[0], FakeMarks(), routes.jid_for)  # type: ignore[arg-type]
    client.component.up = True
    sent: list[StanzaBase] = []
    client.component.xmpp.send = lambda stanza, *_, **__: sent.append(stanza)  # type: ignore[method-assign]
    return client, ctx, sent


def _message(client: XmppClient, frm: str, to: str, mtype: str = "chat") -> Message:
    raw = f"<message xmlns='{NS}' from='{frm}' to='{to}' type='{mtype}' id='m1'><body>hi</body></message>"
    stanza = client.component.xmpp._build_stanza(ET.fromstring(raw))
    assert isinstance(stanza, Message)
    return stanza


async def test_a_message_from_another_component_s_domain_is_refused_with_the_address_to_use(
    component_a: Any,
) -> None:
    client, ctx, sent = component_a
    await client._on_stanza(_message(client, "bob@b.test/phone", "alice\\3ahub.test@matrix.a.test"))
    assert ctx.accepted == [] and ctx.queued == []
    (error,) = sent
    assert error["type"] == "error" and error["error"]["condition"] == "not-allowed"
    assert "alice\\3ahub.test@matrix.b.test" in error["error"]["text"]


async def test_a_groupchat_from_another_component_s_room_is_dropped_silently(
    component_a: Any,
) -> None:
    """Our occupant is not in that room; an error would reach the room, and some MUCs kick an
    occupant for an error."""
    client, ctx, sent = component_a
    await client._on_stanza(_message(client, "team@muc.b.test/Mallory",
                                     "bridge@matrix.a.test/pontis", "groupchat"))  # fmt: skip
    assert ctx.accepted == [] and ctx.queued == [] and sent == []


async def test_a_stanza_on_component_a_addressed_to_b_s_rooms_changes_nothing(
    component_a: Any,
) -> None:
    """A server (or a forged route) hands component A a message for a room B hosts: A is not
    that room, so nothing reaches Matrix through A."""
    client, ctx, _ = component_a
    await client._on_stanza(_message(client, "eve@a.test/x", "room\\3ahub.test@rooms.b.test"))
    await client._on_stanza(_message(client, "eve@a.test/x", "room\\3ahub.test@rooms.b.test",
                                     "groupchat"))  # fmt: skip
    assert ctx.accepted == [] and ctx.queued == []
