"""The federation policy: who may reach whom, decided the same way at every entry.

Pure rules first (what an operator writes, what it means), then the core's entries that do not
need a real server: the bridge command and room alias queries. The XMPP entries are tested end
to end (tests/e2e/test_federation_policy.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.core.adopt import Refused
from bridge.core.errors import PermanentError
from bridge.core.federation import FederationPolicy, Refusal, check_rules, remote_domain
from bridge.core.ids import PortalKey
from bridge.portal.store import Store
from tests.test_adopt import ALICE, Hub
from tests.test_permissions import NET, Connector
from tests.test_permissions import Hub as PermissionsHub

AGENCIES = [
    {"network": "xmpp", "remote": ["agency-a.example"], "matrix": ["local", "a.gov.example"]},
    {"network": "*", "remote": ["*.gouv.example"], "matrix": ["*.gouv.example"]},
    {"network": "email", "remote": ["*"], "matrix": ["local"]},
]


def test_by_default_remote_people_reach_local_users_only() -> None:
    policy = FederationPolicy(None, "hub.test")
    assert policy.refusal("xmpp", "anywhere.example", "@alice:hub.test", entry="t") is None
    refused = policy.refusal("xmpp", "anywhere.example", "@bob:elsewhere.example", entry="t")
    assert refused == Refusal("xmpp", "anywhere.example", "@bob:elsewhere.example")
    assert "elsewhere.example" in str(refused) and "anywhere.example" in str(refused)
    # The user is told whom to ask, and what to ask for.
    assert refused is not None and "operator" in refused.user_message
    assert "`bridge.federation`" in refused.user_message
    assert not policy.open_to_every_server("xmpp", "anywhere.example")


def test_rules_name_networks_domains_and_servers() -> None:
    heard: list[tuple[Refusal, str]] = []
    policy = FederationPolicy(AGENCIES, "hub.test", on_refusal=lambda r, e: heard.append((r, e)))

    def allowed(network: str, remote: str, matrix: str) -> bool:
        return policy.refusal(network, remote, matrix, entry="test") is None

    assert allowed("xmpp", "agency-a.example", "@x:hub.test")
    assert allowed("xmpp", "AGENCY-A.example", "@x:A.GOV.example")  # case does not matter
    assert not allowed("teams", "agency-a.example", "@x:hub.test")  # the rule is xmpp's only
    assert not allowed("xmpp", "sub.agency-a.example", "@x:hub.test")  # exact names are exact
    assert allowed("teams", "paris.gouv.example", "@x:lyon.gouv.example")
    assert not allowed("teams", "gouv.example", "@x:lyon.gouv.example")  # *.x is below x only
    assert not allowed("xmpp", "evilgouv.example", "@x:lyon.gouv.example")
    assert allowed("email", "gmail.example", "@x:hub.test")
    assert not allowed("email", "gmail.example", "@x:a.gov.example")
    assert len(heard) == 5 and {entry for _, entry in heard} == {"test"}


def test_alias_queries_need_a_chat_open_to_every_server() -> None:
    policy = FederationPolicy(
        [{"network": "xmpp", "remote": ["muc.public.example"], "matrix": ["*"]}], "hub.test"
    )
    assert policy.open_to_every_server("xmpp", "muc.public.example")
    assert not policy.open_to_every_server("xmpp", "muc.private.example")
    assert not policy.open_to_every_server("email", "muc.public.example")


@pytest.mark.parametrize(
    ("address", "domain"),
    [("juliet@Capulet.example/balcony", "capulet.example"), ("room@muc.example", "muc.example"),
     ("capulet.example", "capulet.example"), ("a@b@evil.example", "evil.example"),
     ("x@host.example.", "host.example")],
)  # fmt: skip
def test_the_remote_domain_of_an_address(address: str, domain: str) -> None:
    assert remote_domain(address) == domain


def test_mistakes_in_the_rules_are_named() -> None:
    assert check_rules(AGENCIES) == [] and check_rules(None) == []
    bad: Any = [
        "xmpp",
        {"network": "xmpp", "remote": [], "matrix": ["local"]},
        {"remote": ["*"], "matrix": ["@alice:hub.test"], "servers": []},
        {"network": "", "remote": ["a b", "*x"], "matrix": ["*.", " local"]},
    ]
    problems = dict(check_rules(bad))
    assert set(problems) == {
        "bridge.federation[0]", "bridge.federation[1].remote", "bridge.federation[2].matrix",
        "bridge.federation[2].servers", "bridge.federation[3].network",
        "bridge.federation[3].remote", "bridge.federation[3].matrix",
    }  # fmt: skip


async def test_a_federated_user_cannot_bridge_a_room_by_default(store: Store) -> None:
    hub = Hub(store, rules=None)
    stranger = "@mallory:elsewhere.example"
    hub.bridging._permissions._rules["elsewhere.example"] = 2  # a user by level, not by policy
    with pytest.raises(Refused) as refused:
        await hub.bridging.bridge_command("!room:hub.test", stranger, "reference", "one")
    assert "federation policy" in refused.value.user_message
    assert hub.network.asked == [] and await hub.chat_of("!room:hub.test") is None
    assert hub.matrix.state == [] and hub.refusals[0][0] == "bridge command"
    # a local user may
    await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", "one")
    assert await hub.chat_of("!room:hub.test") == "one"


async def test_an_alias_query_finds_nothing_unless_the_chat_is_open_to_everyone(
    store: Store,
) -> None:
    closed = Hub(store, rules=None)
    assert await closed.bridging.alias_query("#reference_team=40muc:hub.test") is None
    assert closed.network.asked == [] and closed.matrix.created == []
    assert closed.refusals and closed.refusals[0][0] == "room alias query"
    opened = Hub(store, rules=[{"network": "reference", "remote": ["muc"], "matrix": ["*"]}])
    assert await opened.bridging.alias_query("#reference_team=40muc:hub.test") is not None


def test_rooms_the_hub_hosts_are_never_refused_as_a_whole() -> None:
    """An XMPP room the hub hosts for a Matrix room: its joiners are checked as they join."""
    policy = FederationPolicy(
        [{"network": "xmpp", "remote": ["xmpp.example"], "matrix": ["local"]}], "hub.test"
    )
    assert policy.refusal("xmpp", "rooms.hub.test", "@a:hub.test", entry="t") is not None
    policy.host("xmpp", "Rooms.Hub.test")
    assert policy.refusal("xmpp", "rooms.hub.test", "@a:hub.test", entry="t") is None
    assert policy.refusal("email", "rooms.hub.test", "@a:elsewhere", entry="t") is not None


class _TenantConnector(Connector):
    """A network whose chats belong to tenants, as Teams': its chat ids say nothing of it."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    async def policy_domain(self, portal: PortalKey) -> str:
        return self.tenant


async def test_a_portal_of_a_tenant_network_is_checked_by_its_tenant(store: Store) -> None:
    """Rules name Teams tenants; a chat id (``19:…@thread.v2``) has none to match."""
    hub = PermissionsHub(store, relay_enabled=False)
    await hub.portal(relay=False)
    rules = [{"network": NET, "remote": ["tenant-a"], "matrix": ["local"]}]
    hub.router._federation = FederationPolicy(rules, "hub.test")
    hub.router._connectors[NET] = _TenantConnector("tenant-a")
    await hub.event(ALICE, "m.room.message", {"msgtype": "m.text", "body": "allowed"})
    assert [m.body for m in hub.client.messages] == ["allowed"]
    hub.router._connectors[NET] = _TenantConnector("tenant-b")
    with pytest.raises(PermanentError, match="tenant-b"):
        await hub.event(ALICE, "m.room.message", {"msgtype": "m.text", "body": "refused"})
    assert len(hub.client.messages) == 1
