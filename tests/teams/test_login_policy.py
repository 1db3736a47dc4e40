"""``login teams`` offers only the organisations the federation policy lets the Matrix user
reach, and refuses, with the reason, when there is none; ``start-chat teams`` and ``search
teams`` refuse what they must before Graph is asked."""

from __future__ import annotations

from unittest.mock import MagicMock, patch

import pytest

from bridge.core import BridgeError, PermanentError
from bridge.core.federation import FederationPolicy
from bridge.teams import directory
from bridge.teams.client import TeamsSharedClient
from bridge.teams.login import DeviceCodeLogin

TENANTS = ("tenant-a", "tenant-b", "tenant-c")


def _login(rules: list[dict[str, object]], user: str = "@alice:hub") -> DeviceCodeLogin:
    net = MagicMock()
    links = {}
    for tenant in TENANTS:
        link = MagicMock()
        link.id = tenant
        link.tenant.tenant_id = tenant
        links[tenant] = link
    net.tenants = links
    net.ctx.federation = FederationPolicy(rules, "hub")
    net.ctx.http = None  # a device code request would fail: none must be made
    return DeviceCodeLogin(net, user)


async def test_a_user_no_rule_lets_reach_any_tenant_is_refused_with_the_reason() -> None:
    login = _login([{"network": "teams", "remote": ["tenant-a"], "matrix": ["partner.example"]}])
    with pytest.raises(PermanentError) as refused:
        await login.submit(None)
    assert "federation policy" in refused.value.user_message
    assert "tenant-a" in refused.value.user_message


async def test_only_the_allowed_organisations_are_offered() -> None:
    login = _login([{"network": "teams", "remote": ["tenant-a", "tenant-c"], "matrix": ["local"]}])
    step = await login.submit(None)
    assert step.kind == "user_input"
    assert "`tenant-a`" in step.instructions and "`tenant-c`" in step.instructions
    assert "tenant-b" not in step.instructions


def test_a_chat_with_a_person_of_a_tenant_the_policy_closes_is_refused() -> None:
    login = _login([{"network": "teams", "remote": ["tenant-a"], "matrix": ["local"]}])
    net = login._net  # the same network double
    directory.check_policy(net, net.tenants["tenant-a"], "@alice:hub")  # allowed: no error
    with pytest.raises(PermanentError) as refused:
        directory.check_policy(net, net.tenants["tenant-b"], "@alice:hub")
    assert "tenant-b" in refused.value.user_message


@pytest.mark.parametrize("query", ["", "   ", '"\\', "\x00\x01"])
def test_a_search_for_nothing_is_refused_before_graph_is_asked(query: str) -> None:
    with pytest.raises(BridgeError):
        directory.search_phrase(query)


def test_a_search_phrase_is_capped_and_quote_free() -> None:
    phrase = directory.search_phrase('a" OR "mail:' + "x" * 500)
    assert phrase.count('"') == 4 and len(phrase) < 2 * directory.MAX_QUERY + 40


async def test_a_search_reads_only_the_directories_the_user_may_reach() -> None:
    """A Matrix user the policy keeps from a tenant cannot list its people either."""
    login = _login([{"network": "teams", "remote": ["tenant-a"], "matrix": ["local"]}])
    net = login._net
    client = TeamsSharedClient(net)
    searched: list[str] = []

    async def search(_net: object, links: list[MagicMock], query: str) -> list[object]:
        searched.extend(link.tenant.tenant_id for link in links)
        return []

    with patch.object(directory, "search", search):
        assert await client.search_users("ann", "@alice:hub") == []
        assert searched == ["tenant-a"]
        assert await client.search_users("ann", "@mallory:elsewhere.example") == []
        assert searched == ["tenant-a"]  # no directory was read for them
