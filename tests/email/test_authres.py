from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.email.protocol.authres import (
    AuthVerdict,
    read_arc_authentication_results,
    read_authentication_results,
    sender_verified,
)
from bridge.email.protocol.parse import parse_mail
from tests.email.mails import load

MX = "mx.agency.example"


def verdict(*values: str) -> AuthVerdict:
    return read_authentication_results(list(values), MX)


def test_rspamd_style_single_header() -> None:
    result = verdict(
        "mx.agency.example; dkim=pass header.d=example.org header.s=s1 header.b=AbCd;"
        " spf=pass (mx.agency.example: domain of bounces@example.org designates 192.0.2.1"
        " as permitted sender) smtp.mailfrom=bounces@example.org;"
        " dmarc=pass (policy=reject) header.from=example.org"
    )
    assert result == AuthVerdict(
        dmarc="pass",
        dmarc_from="example.org",
        dkim=[("pass", "example.org")],
        spf=("pass", "example.org"),
    )


def test_with_one_header_per_milter_only_the_topmost_counts() -> None:
    # OpenDKIM, policyd-spf and OpenDMARC each wrote one; the DMARC milter's is not on top, so
    # its pass is not read: a header below the topmost may be the sender's.
    mail = parse_mail(load("gmail-reply.eml"))
    result = read_authentication_results(mail.authentication_results, MX)
    assert result.dkim == [("pass", "gmail.com")]
    assert result.spf is None and result.dmarc is None
    assert not sender_verified(result, "gmail.com", "dmarc")
    assert sender_verified(result, "gmail.com", "aligned")


def test_a_forged_header_below_the_mta_s_own_is_ignored() -> None:
    # The MTA found DMARC failing and wrote so on top; the sender's header claiming a pass under
    # the same authserv-id comes below it, whether the MTA left it there or not.
    real = "mx.agency.example; dkim=none; spf=fail smtp.mailfrom=agency.example; dmarc=fail"
    forged = "mx.agency.example; dmarc=pass header.from=agency.example; dkim=pass header.d=agency.example"
    result = verdict(real, forged)
    assert result == AuthVerdict(dmarc="fail", dkim=[("none", "")], spf=("fail", "agency.example"))
    assert not sender_verified(result, "agency.example", "aligned")
    # Other ids above the trusted one do not make the forged one the topmost trusted header.
    assert verdict("relay.example; dmarc=pass header.from=x.org", real, forged).dmarc == "fail"


def test_arc_authentication_results() -> None:
    found = read_arc_authentication_results(
        "i=2; lists.example.org; dkim=pass header.d=example.org; dmarc=pass (p=reject)"
        " header.from=example.org; arc=pass"
    )
    assert found is not None
    instance, authserv_id, result = found
    assert (instance, authserv_id) == (2, "lists.example.org")
    assert (result.dmarc, result.dmarc_from, result.arc) == ("pass", "example.org", "pass")
    for broken in ["", "lists.example.org; dmarc=pass", "i=x; lists.example.org", "i=1", "i=1; "]:
        assert read_arc_authentication_results(broken) is None


def test_the_mta_s_arc_result_is_read() -> None:
    assert verdict("mx.agency.example; arc=pass (i=2) smtp.remote-ip=192.0.2.1").arc == "pass"
    assert verdict("mx.agency.example; arc=fail; arc=pass").arc == "fail"


def test_headers_from_other_authserv_ids_are_ignored() -> None:
    # The sender writes its own "pass" under another id, or under no id at all.
    forged = [
        "evil.example; dmarc=pass header.from=agency.example; dkim=pass header.d=agency.example",
        "dmarc=pass header.from=agency.example",
        "mx.agency.example.evil.example; spf=pass smtp.mailfrom=agency.example",
    ]
    assert verdict(*forged) == AuthVerdict()
    real = "mx.agency.example; dmarc=fail (p=reject) header.from=agency.example"
    result = verdict(forged[0], real, forged[1])
    assert (result.dmarc, result.dkim) == ("fail", [])
    assert not sender_verified(result, "agency.example", "aligned")


def test_authserv_id_is_case_insensitive_and_may_carry_a_version() -> None:
    assert verdict("MX.Agency.Example 1; spf=pass smtp.mailfrom=example.org").spf == (
        "pass",
        "example.org",
    )
    assert verdict('"mx.agency.example"; spf=pass smtp.mailfrom=example.org').spf is not None


def test_comments_and_quoted_strings_may_contain_separators() -> None:
    result = verdict(
        "mx.agency.example (version 3.2; built (nested; comment)); "
        'dkim=pass (good signature; key=2048 bits) header.d=example.org header.b="ab;cd=ef"; '
        "dmarc=pass header.from=(the From domain; evaluated) example.org"
    )
    assert result.dkim == [("pass", "example.org")]
    assert (result.dmarc, result.dmarc_from) == ("pass", "example.org")


@pytest.mark.parametrize(
    "value",
    ["mx.agency.example; none", "mx.agency.example;none (no checks)", "mx.agency.example", ""],
)
def test_no_results(value: str) -> None:
    assert verdict(value) == AuthVerdict()


def test_several_signatures_and_the_first_result_wins() -> None:
    result = verdict(
        "mx.agency.example; dkim=fail header.d=example.org; dkim=PASS header.i=@Lists.Example.NET;"
        " dkim=none; spf=softfail smtp.helo=mail.example.org; spf=pass smtp.mailfrom=example.org;"
        " dmarc=none header.from=example.org; dmarc=pass header.from=example.org",
    )
    assert result.dkim == [("fail", "example.org"), ("pass", "lists.example.net"), ("none", "")]
    assert result.spf == ("softfail", "mail.example.org")
    assert (result.dmarc, result.dmarc_from) == ("none", "example.org")


def test_method_versions_and_reasons() -> None:
    result = verdict(
        'mx.agency.example; dkim/1=pass reason="good" header.d=example.org;'
        " spf = pass smtp . mailfrom = example.org"
    )
    assert result.dkim == [("pass", "example.org")]
    assert result.spf == ("pass", "example.org")


def test_an_empty_trusted_id_trusts_nothing() -> None:
    assert read_authentication_results(["; dmarc=pass header.from=x.org"], "") == AuthVerdict()


def test_hostile_headers_are_read_in_linear_time() -> None:
    started = time.monotonic()
    for junk in ["a" * 100_000, '"' + "a" * 100_000, "a=" * 50_000, "(" * 100_000, "a/" * 50_000]:
        read_authentication_results([f"{MX}; {junk}"], MX)
    assert time.monotonic() - started < 2


@settings(max_examples=50)
@given(st.lists(st.text(max_size=120)), st.text(max_size=20))
def test_arbitrary_headers_never_raise(values: list[str], authserv_id: str) -> None:
    read_authentication_results(values, authserv_id)


# --- sender_verified ------------------------------------------------------------------------

DMARC_PASS = AuthVerdict(dmarc="pass", dmarc_from="example.org")
DMARC_PASS_UNNAMED = AuthVerdict(dmarc="pass")
DMARC_FAIL_DKIM_PASS = AuthVerdict(dmarc="fail", dkim=[("pass", "example.org")])


@pytest.mark.parametrize(
    ("result", "from_domain", "require", "verified"),
    [
        (DMARC_PASS, "example.org", "dmarc", True),
        (DMARC_PASS, "Example.ORG.", "dmarc", True),
        # A pass that names no domain could be for any domain.
        (DMARC_PASS_UNNAMED, "example.org", "dmarc", False),
        (DMARC_PASS_UNNAMED, "example.org", "aligned", False),
        # The MTA evaluated another From than we read: a parser-ambiguity spoof.
        (DMARC_PASS, "agency.example", "dmarc", False),
        (DMARC_PASS, "agency.example", "aligned", False),
        (AuthVerdict(dmarc="fail", dmarc_from="example.org"), "example.org", "dmarc", False),
        (AuthVerdict(), "example.org", "dmarc", False),
        (DMARC_FAIL_DKIM_PASS, "example.org", "dmarc", False),
        (DMARC_FAIL_DKIM_PASS, "example.org", "aligned", True),
        (AuthVerdict(dkim=[("pass", "example.org")]), "mail.example.org", "aligned", True),
        # A subdomain's key does not vouch for its parent, nor a look-alike for another domain.
        (AuthVerdict(dkim=[("pass", "evil.example.org")]), "example.org", "aligned", False),
        (AuthVerdict(dkim=[("pass", "example.org")]), "notexample.org", "aligned", False),
        (AuthVerdict(dkim=[("fail", "example.org")]), "example.org", "aligned", False),
        (AuthVerdict(dkim=[("pass", "")]), "example.org", "aligned", False),
        (AuthVerdict(spf=("pass", "example.org")), "example.org", "aligned", True),
        (AuthVerdict(spf=("pass", "bounces.example.net")), "example.org", "aligned", False),
        (AuthVerdict(spf=("softfail", "example.org")), "example.org", "aligned", False),
        (AuthVerdict(spf=("pass", "example.org")), "example.org", "dmarc", False),
        (AuthVerdict(), "example.org", "none", True),
    ],
)
def test_sender_verified(
    result: AuthVerdict, from_domain: str, require: str, verified: bool
) -> None:
    assert sender_verified(result, from_domain, require) is verified


def test_unknown_requirement_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown sender verification 'strict'"):
        sender_verified(DMARC_PASS, "example.org", "strict")
