"""The sender verification keys of ``connectors.email``: defaults, and what an operator gets
wrong (each problem names its key)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from ruamel.yaml import YAML

from bridge.email.config import EXAMPLE_CONFIG, EmailConfig
from bridge.email.resolver import parse_nameserver, probe
from tests.dns_server import DnsServer


def section(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(dict(YAML(typ="safe").load(EXAMPLE_CONFIG)))
    data.update(changes)
    return data


def test_the_example_verifies_through_the_mta_and_refuses_the_unverified() -> None:
    cfg = EmailConfig.from_section(section())
    assert (cfg.verifier, cfg.unverified_mail) == ("mta", "refuse")
    assert cfg.trusted_mta_addresses == cfg.arc_forwarders == cfg.dns_nameservers == ()
    assert cfg.dns_timeout == 10 and cfg.problems() == []


def test_keys_left_out_of_an_older_section_take_their_defaults() -> None:
    old = section()
    for key in ("verifier", "trusted_mta_addresses", "unverified_mail", "arc_forwarders", "dns"):
        del old[key]
    cfg = EmailConfig.from_section(old)
    assert (cfg.verifier, cfg.unverified_mail, cfg.dns_timeout) == ("mta", "refuse", 10)


def test_a_working_in_process_setup() -> None:
    cfg = EmailConfig.from_section(
        section(
            verifier="bridge",
            trusted_authserv_id="",
            unverified_mail="mark",
            trusted_mta_addresses=["192.0.2.25", "2001:db8::/64"],
            arc_forwarders=["Lists.Example.ORG."],
            dns={"nameservers": ["127.0.0.1:5353", "[::1]:53", "192.0.2.53"], "timeout": 3},
        )
    )
    assert cfg.problems() == []
    assert cfg.arc_forwarders == ("lists.example.org",)
    assert cfg.dns_nameservers == ("127.0.0.1:5353", "[::1]:53", "192.0.2.53")


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"verifier": "rspamd"}, "verifier"),
        ({"unverified_mail": "quarantine"}, "unverified_mail"),
        ({"trusted_mta_addresses": ["mx.example.org"]}, "trusted_mta_addresses"),
        ({"trusted_mta_addresses": ["192.0.2.0/33"]}, "trusted_mta_addresses"),
        ({"arc_forwarders": ["postmaster@lists.example.org"]}, "arc_forwarders"),
        ({"arc_own_sealers": ["postmaster@mx.example.org"]}, "arc_own_sealers"),
        ({"arc_own_sealers": ["mx.example.org"], "verifier": "bridge"}, "arc_own_sealers"),
        ({"dns": {"nameservers": ["ns1.example.org"], "timeout": 5}}, "dns.nameservers"),
        ({"dns": {"nameservers": ["127.0.0.1:99999"], "timeout": 5}}, "dns.nameservers"),
        ({"dns": {"nameservers": [], "timeout": 0}}, "dns.timeout"),
        ({"trusted_authserv_id": ""}, "trusted_authserv_id"),
    ],
)
def test_mistakes_are_reported_by_key(changes: dict[str, Any], key: str) -> None:
    problems = EmailConfig.from_section(section(**changes)).problems()
    assert any(p.startswith(f"connectors.email.{key}:") for p in problems), problems


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
    ],
)
def test_name_servers(text: str, parsed: tuple[str, int]) -> None:
    assert parse_nameserver(text) == parsed


@pytest.mark.parametrize("text", ["", "dns.example", "1.2.3.4:x", "[::1]x", "1.2.3.4:0"])
def test_bad_name_servers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(text)


async def test_pontis_check_tells_whether_the_name_servers_answer() -> None:
    zone = DnsServer()
    await zone.start()
    try:
        assert await probe([zone.nameserver], "_dmarc.mail.example.org", wait=2) is None
        zone.silent.add("_dmarc.mail.example.org")
        problem = await probe([zone.nameserver], "_dmarc.mail.example.org", wait=1)
        assert problem is not None and problem.startswith("the name servers do not answer")
    finally:
        zone.stop()
