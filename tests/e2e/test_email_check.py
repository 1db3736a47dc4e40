"""`pontis check` for email: the section's values, and a real connection to the relay."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from ruamel.yaml import YAML

from bridge.email.config import EXAMPLE_CONFIG
from bridge.email.connector import EmailConnector
from tests.e2e.conftest import Hub
from tests.e2e.process import free_port

pytestmark = pytest.mark.e2e


def _section(**changes: Any) -> dict[str, Any]:
    section: dict[str, Any] = copy.deepcopy(dict(YAML(typ="safe").load(EXAMPLE_CONFIG)))
    for path, value in changes.items():
        node = section
        *parents, key = path.split("__")
        for parent in parents:
            node = node[parent]
        node[key] = value
    return section


async def test_a_relay_that_answers_passes(hub: Hub) -> None:
    section = _section(outbound__port=hub.mail.smtp_port, domain="hub-mail.test")
    assert await EmailConnector().check(section) == []


async def test_every_problem_is_named_by_its_key() -> None:
    port = free_port()
    section = _section(
        domain="not a domain",
        inbound__protocol="imap",
        sender_verification="spf",
        outbound__port=port,
    )
    problems = await EmailConnector().check(section)
    assert [p.split(":")[0] for p in problems] == [
        "connectors.email.domain",
        "connectors.email.inbound.protocol",
        "connectors.email.sender_verification",
        "connectors.email.outbound",
    ]
    assert f"127.0.0.1:{port}" in problems[-1]


async def test_verification_without_a_trusted_authserv_id_is_refused() -> None:
    section = _section(trusted_authserv_id="", outbound__port=free_port())
    problems = await EmailConnector().check(section)
    assert any(p.startswith("connectors.email.trusted_authserv_id:") for p in problems)
