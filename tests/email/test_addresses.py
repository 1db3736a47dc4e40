from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bridge.email.protocol.addresses import (
    RESERVED_LOCALPARTS,
    InvalidAddress,
    is_international,
    is_own_message_id,
    is_portal_localpart,
    is_valid_message_id,
    message_id_for_event,
    new_portal_address,
    normalize_address,
    normalize_domain,
    parse_message_ids,
    split_address,
)

# --- normalize_address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_address", "normalized"),
    [
        ("bob@example.org", "bob@example.org"),
        ("  Bob.Smith@Example.ORG \r\n", "bob.smith@example.org"),
        ("first.last+tag@sub.example.org", "first.last+tag@sub.example.org"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("x@a-b.example", "x@a-b.example"),
        ("a!#$%&'*+/?=^_`{|}~-@example.org", "a!#$%&'*+/?=^_`{|}~-@example.org"),
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
        ("postmaster@localhost", "postmaster@localhost"),
    ],
)
def test_valid_addresses_are_case_folded(given_address: str, normalized: str) -> None:
    assert normalize_address(given_address) == normalized


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "exactly one '@'"),
        ("bob", "exactly one '@'"),
        ("a@b@example.org", "exactly one '@'"),
        ("bob@", "domain is empty"),
        ("@example.org", "local part is empty"),
        ("bob smith@example.org", "a space"),
        ("bob@example.org\r\nBcc: victim@example.org", "U+000D"),
        ("bob\x00@example.org", "U+0000"),
        ("bob\u202e@example.org", "U+202E"),
        ("<bob@example.org>", "'<'"),
        ("bob@example.org,", "','"),
        ("a;b@example.org", "';'"),
        ('"bob"@example.org', "a quote"),
        (".bob@example.org", "local part"),
        ("bob.@example.org", "local part"),
        ("bo..b@example.org", "local part"),
        ("b(o)b@example.org", "local part"),
        ("=?utf-8?q?=0d=0a?=@example.org", "encoded word"),
        ("x" * 65 + "@example.org", "local part"),
        ("j\u202egen@example.de", "U+202E"),  # a bidi override is no letter
        ("j€rgen@example.de", "U+20AC"),
        ("bob@bü_cher.example", "not a valid internationalised domain name"),
        ("bob@-example.org", "not a host name"),
        ("bob@example-.org", "not a host name"),
        ("bob@exa_mple.org", "not a host name"),
        ("bob@example..org", "not a host name"),
        ("bob@example.org.", "not a host name"),
        ("bob@[192.0.2.1]", "not a host name"),
        ("bob@" + "a" * 64 + ".org", "not a host name"),
        ("bob@" + ".".join(["a" * 60] * 5) + ".org", "longer than 254"),
    ],
)
def test_invalid_addresses_are_refused_with_the_reason(bad: str, reason: str) -> None:
    with pytest.raises(InvalidAddress, match=re.escape(reason)):
        normalize_address(bad)


@pytest.mark.parametrize(
    ("given_address", "normalized"),
    [
        ("Jürgen@Müller.example", "jürgen@xn--mller-kva.example"),
        ("jürgen@xn--mller-kva.example", "jürgen@xn--mller-kva.example"),
        ("J\u0075\u0308rgen@example.de", "jürgen@example.de"),  # NFC: one address, one ghost
        ("用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v"),
        ("नमस्ते@example.in", "नमस्ते@example.in"),  # combining marks are part of words
    ],
)
def test_international_addresses_are_accepted_with_ascii_domains(
    given_address: str, normalized: str
) -> None:
    assert normalize_address(given_address) == normalized
    assert is_international(normalized) == (not normalized.split("@")[0].isascii())


def test_invalid_address_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a valid email address"):
        normalize_address("nobody")


@settings(max_examples=40)
@given(st.text(max_size=80) | st.emails())
def test_normalize_either_refuses_or_returns_a_canonical_address(text: str) -> None:
    try:
        address = normalize_address(text)
    except InvalidAddress:
        return
    assert normalize_address(address) == address
    assert address == address.lower().strip()
    assert address.count("@") == 1
    assert address.isascii() and address.isprintable() and " " not in address


@settings(max_examples=20)
@given(st.emails())
def test_every_ascii_email_from_hypothesis_is_accepted(address: str) -> None:
    # Hypothesis' emails() are RFC 5322 dot-atoms with ASCII host names: our subset, but for
    # local parts with "=?", which Python's header parser would decode as an encoded word.
    assume("=?" not in address.split("@")[0])
    assert normalize_address(address) == address.lower()


def test_split_address() -> None:
    assert split_address("Bob@Example.ORG") == ("bob", "example.org")
    with pytest.raises(InvalidAddress):
        split_address("bob")


def test_normalize_domain() -> None:
    assert normalize_domain(" Bridge.Example.ORG ") == "bridge.example.org"
    with pytest.raises(InvalidAddress, match="not a host name"):
        normalize_domain("bridge example.org")


def test_reserved_localparts_cover_the_role_accounts() -> None:
    assert {
        "postmaster",
        "abuse",
        "mailer-daemon",
        "hostmaster",
        "webmaster",
    } <= RESERVED_LOCALPARTS
    assert {"noreply", "no-reply", "root", "admin", "security"} <= RESERVED_LOCALPARTS


# --- portal addresses -----------------------------------------------------------------------

PORTAL = re.compile(r"(?P<slug>[a-z0-9-]+)\.(?P<token>[a-z2-7]{16})@(?P<domain>.+)")


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Budget 2024", "budget-2024"),
        ("Équipe Données", "equipe-donnees"),
        ("Straße & Ærø Øresund", "strasse-aero-oresund"),
        ("  --Hello--World--  ", "hello-world"),
        ("Łódź Office", "lodz-office"),
        ("", "room"),
        ("日本語", "room"),
        ("!!!", "room"),
        ("Postmaster", "room-postmaster"),
        ("no-reply", "room-no-reply"),
        ("A" * 40, "a" * 32),
        ("a" * 31 + " b", "a" * 31),  # cut at 32, the trailing dash goes too
    ],
)
def test_portal_address_slug(name: str, slug: str) -> None:
    match = PORTAL.fullmatch(new_portal_address(name, "Bridge.Agency.Example"))
    assert match is not None
    assert match["slug"] == slug
    assert match["domain"] == "bridge.agency.example"


def test_portal_addresses_are_unguessable() -> None:
    addresses = {new_portal_address("budget", "bridge.example") for _ in range(50)}
    assert len({address.split("@")[0].split(".")[1] for address in addresses}) == 50


def test_portal_address_refuses_a_bad_domain() -> None:
    with pytest.raises(InvalidAddress):
        new_portal_address("budget", "not a domain")


@given(st.text(max_size=60))
def test_portal_addresses_are_valid_and_recognised(name: str) -> None:
    address = new_portal_address(name, "bridge.example")
    assert normalize_address(address) == address
    local, _ = split_address(address)
    assert is_portal_localpart(local)
    assert local.split(".")[0] not in RESERVED_LOCALPARTS


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("budget.abcdefghijklmnop", True),
        ("Budget.ABCDEFGHIJKLMNOP", True),  # MTAs and senders may change the case
        ("a.zzzzzzzzzzzzzzzz", True),
        ("postmaster", False),
        ("budget.abcdefghijklmno", False),  # 15 characters
        ("budget.abcdefghijklmnopq", False),  # 17 characters
        ("budget.abcdefghijklmno1", False),  # 1 is not base32
        ("-budget.abcdefghijklmnop", False),
        ("bud_get.abcdefghijklmnop", False),
        ("budget+abcdefghijklmnop", False),
        (".abcdefghijklmnop", False),
    ],
)
def test_is_portal_localpart(local: str, expected: bool) -> None:
    assert is_portal_localpart(local) is expected


# --- Message-IDs ----------------------------------------------------------------------------


def test_message_id_for_event_is_deterministic_and_opaque() -> None:
    event_id = "$hV3r8Bz0wE2x7yZ:matrix.agency.example"
    message_id = message_id_for_event(event_id, "Bridge.Agency.Example")
    assert message_id == message_id_for_event(event_id, "bridge.agency.example")
    assert re.fullmatch(r"<[a-z2-7]{26}@bridge\.agency\.example>", message_id)
    assert "hV3r8" not in message_id and "matrix" not in message_id
    assert message_id != message_id_for_event("$other", "bridge.agency.example")


def test_message_id_for_event_refuses_a_bad_domain() -> None:
    with pytest.raises(InvalidAddress):
        message_id_for_event("$e", "bridge agency")


def test_is_own_message_id() -> None:
    own = message_id_for_event("$event", "bridge.example")
    assert is_own_message_id(own, "bridge.example")
    assert is_own_message_id(own, "Bridge.Example")
    assert is_own_message_id(own.upper(), "bridge.example")
    assert is_own_message_id(own.strip("<>"), "bridge.example")
    assert not is_own_message_id(own, "other.example")
    assert not is_own_message_id("<abc@bridge.example>", "bridge.example")
    assert not is_own_message_id("<[abc]@[example]>", "bridge.example")
    assert not is_own_message_id("", "bridge.example")


@given(st.text(max_size=100))
def test_message_ids_for_events_are_always_valid(event_id: str) -> None:
    message_id = message_id_for_event(event_id, "bridge.example")
    assert is_valid_message_id(message_id)
    assert parse_message_ids(message_id) == [message_id]
    assert is_own_message_id(message_id, "bridge.example")


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        ("<abc@example.org>", ["<abc@example.org>"]),
        ("<[abc]@[example]>", ["<[abc]@[example]>"]),  # Exchange
        (" <a@x>\r\n\t<b@y> (comment) <a@x>", ["<a@x>", "<b@y>"]),
        ("<a@x>,<b@y>", ["<a@x>", "<b@y>"]),
        ("<no-domain>", ["<no-domain>"]),
        ("abc@example.org", ["<abc@example.org>"]),  # no brackets: some old mailers
        ("Your message of Mon, 1 Jan 2024 <abc@example.org>", ["<abc@example.org>"]),
        ("<a b@x>", []),
        ("<ünï@x>", []),
        ("<" + "a" * 251 + ">", []),
        ("<>", []),
        ("", []),
        ("no id here", []),
    ],
)
def test_parse_message_ids(value: str, ids: list[str]) -> None:
    assert parse_message_ids(value) == ids
