from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bridge.xmpp.protocol.escaping import (
    bare_jid,
    escape_node,
    is_valid_jid,
    jid_to_mxid,
    muc_to_room_alias,
    mxid_to_jid,
    room_alias_to_muc,
    split_jid,
    unescape_node,
)

USERS = "matrix.xmpp.example"
ROOMS = "rooms.xmpp.example"

# XEP-0106 §5.1 "JID Examples": (user input, escaped localpart as the XEP's table gives it).
XEP_0106_TABLE = [
    ("space cadet", r"space\20cadet"),
    ('call me "ishmael"', r"call\20me\20\22ishmael\22"),
    ("at&t guy", r"at\26t\20guy"),
    ("d'artagnan", r"d\27artagnan"),
    ("/.fanboy", r"\2f.fanboy"),
    ("::foo::", r"\3a\3afoo\3a\3a"),
    ("<foo>", r"\3cfoo\3e"),
    ("user@host", r"user\40host"),
    ("c:\\net", r"c\3a\5cnet"),
    ("c:\\\\net", r"c\3a\5c\5cnet"),
    ("c:\\cool stuff", r"c\3a\5ccool\20stuff"),
    ("c:\\5commas", r"c\3a\5c5commas"),
]

# Rows 9-11 escape backslashes that precede no escape code. That contradicts the XEP's own
# business rules (§4.1 rule 7, §4.3: "foo\bar is not modified"), which we follow; both forms
# unescape to the same input.
MINIMAL_BACKSLASH_ESCAPING = {
    "c:\\net": r"c\3a\net",
    "c:\\\\net": r"c\3a\\net",
    "c:\\cool stuff": r"c\3a\cool\20stuff",
}


@pytest.mark.parametrize(("user_input", "escaped"), XEP_0106_TABLE)
def test_xep_0106_examples_unescape(user_input: str, escaped: str) -> None:
    assert unescape_node(escaped) == user_input


@pytest.mark.parametrize(("user_input", "escaped"), XEP_0106_TABLE)
def test_xep_0106_examples_escape(user_input: str, escaped: str) -> None:
    expected = MINIMAL_BACKSLASH_ESCAPING.get(user_input, escaped)
    assert escape_node(user_input) == expected
    assert unescape_node(expected) == user_input
    assert is_valid_jid(f"{expected}@example.com")


@pytest.mark.parametrize(
    "untouched",
    [r"\2plus\2is\4", r"foo\bar", r"foob\41r", r"\2F", r"\zz", "plain", "\\"],
)
def test_xep_0106_exceptions_are_not_unescaped(untouched: str) -> None:
    # §4.3: partial sequences and sequences for other characters are left alone.
    assert unescape_node(untouched) == untouched


@pytest.mark.parametrize(
    ("source", "escaped"),
    [
        (r"\2plus\2is\4", r"\2plus\2is\4"),
        (r"foo\bar", r"foo\bar"),
        (r"foob\41r", r"foob\41r"),
        # §4.2 step 3: a source sequence that reads as an escape gets its backslash escaped.
        (r"\3and\2is\5cool", r"\5c3and\2is\5c5cool"),
        ("here's_a_wild_&_/cr%zy/_address", r"here\27s_a_wild_\26_\2fcr%zy\2f_address"),
        # Upper-case codes are escaped too: a server's case folding would otherwise decode them.
        (r"a\2Fb", r"a\5c2Fb"),
    ],
)
def test_xep_0106_address_transformations(source: str, escaped: str) -> None:
    assert escape_node(source) == escaped
    assert unescape_node(escaped) == source


@pytest.mark.parametrize("bad", [" leading", "trailing ", " "])
def test_escaped_node_cannot_start_or_end_with_space(bad: str) -> None:
    with pytest.raises(ValueError, match="space"):
        escape_node(bad)


@given(st.text())
def test_escape_round_trip(text: str) -> None:
    assume(not text.startswith(" ") and not text.endswith(" "))
    escaped = escape_node(text)
    assert unescape_node(escaped) == text
    assert not set(escaped) & set(" \"&'/:<>@")


@given(st.text())
def test_unescape_never_raises(text: str) -> None:
    unescape_node(text)


# --- Matrix ids and room aliases ------------------------------------------------------------


@pytest.mark.parametrize(
    ("mxid", "jid"),
    [
        ("@alice:hub.example", r"alice\3ahub.example@" + USERS),
        ("@Alice:Hub.Example", r"alice\3ahub.example@" + USERS),
        ("@a.b_c=d-e/f+g:hub.example:8448", r"a.b_c=d-e\2ff+g\3ahub.example\3a8448@" + USERS),
        ("@bob:[2001:db8::1]:8448", r"bob\3a[2001\3adb8\3a\3a1]\3a8448@" + USERS),
        ("@bob:192.0.2.1", r"bob\3a192.0.2.1@" + USERS),
        # Historical localparts: printable ASCII except ':'.
        ("@o'hara&co:hub.example", r"o\27hara\26co\3ahub.example@" + USERS),
        ("@c\\3a:hub.example", r"c\5c3a\3ahub.example@" + USERS),
    ],
)
def test_mxid_to_jid(mxid: str, jid: str) -> None:
    assert mxid_to_jid(mxid, USERS) == jid
    assert is_valid_jid(jid)
    assert jid_to_mxid(jid, USERS) == mxid.lower()


@pytest.mark.parametrize(
    "not_mxid",
    [
        "",
        "alice:hub.example",
        "@alice",
        "@:hub.example",
        "@alice:",
        "@al ice:hub.example",
        "@alice:hub example",
        "@alice:hub.example:port",
        "@alice:hub.example:123456",
        "@alice:[zz::1]",
        "@alicé:hub.example",
        "#room:hub.example",
        "@" + "a" * 250 + ":hub.example",
    ],
)
def test_mxid_to_jid_rejects_invalid_mxids(not_mxid: str) -> None:
    with pytest.raises(ValueError, match="not a Matrix user id"):
        mxid_to_jid(not_mxid, USERS)


@pytest.mark.parametrize(
    "jid",
    [
        r"alice\3ahub.example@other.example",  # not our users domain
        USERS,  # no localpart
        r"alice@" + USERS,  # no server part
        r"\3ahub.example@" + USERS,  # empty Matrix localpart
        r"alice\3a@" + USERS,  # empty server name
        r"alice\3ahub\20x@" + USERS,  # space in the server name
        r"alice\3ahub.example@" + USERS + "@x",  # not a JID
        # Not the canonical escaping of "@a\b:hub.example" (that is a\b\3ahub.example).
        r"a\5cb\3ahub.example@" + USERS,
    ],
)
def test_jid_to_mxid_rejects_foreign_or_non_canonical(jid: str) -> None:
    assert jid_to_mxid(jid, USERS) is None


def test_jid_to_mxid_ignores_resource_and_case() -> None:
    assert jid_to_mxid(r"Alice\3aHub.Example@Matrix.XMPP.example/phone", USERS) == (
        "@alice:hub.example"
    )


_LOCALPART = st.text("abcdefghijklmnopqrstuvwxyz0123456789._=-/+", min_size=1, max_size=40)
_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_SERVER = st.builds(
    lambda labels, port: ".".join(labels) + (f":{port}" if port is not None else ""),
    st.lists(_LABEL, min_size=1, max_size=4),
    st.none() | st.integers(1, 65535),
)


@given(_LOCALPART, _SERVER)
def test_mxid_jid_round_trip(localpart: str, server: str) -> None:
    mxid = f"@{localpart}:{server}"
    jid = mxid_to_jid(mxid, USERS)
    assert is_valid_jid(jid)
    local, domain, resource = split_jid(jid)
    assert domain == USERS and resource is None and local is not None
    assert not set(local) & set(" \"&'/:<>@")
    assert jid_to_mxid(jid, USERS) == mxid


@pytest.mark.parametrize(
    ("alias", "muc"),
    [
        ("#room:hub.example", r"room\3ahub.example@" + ROOMS),
        ("#Room:hub.example", r"room\3ahub.example@" + ROOMS),
        ("#café & co:hub.example", r"café\20\26\20co\3ahub.example@" + ROOMS),
        ("#a:b:c:hub.example:8448", None),  # ':' is not allowed in an alias localpart...
    ],
)
def test_room_alias_to_muc(alias: str, muc: str | None) -> None:
    if muc is None:
        # ...so the alias is "#a" on server "b:c:hub.example:8448", an invalid server name.
        with pytest.raises(ValueError, match="server name"):
            room_alias_to_muc(alias, ROOMS)
        return
    assert room_alias_to_muc(alias, ROOMS) == muc
    assert muc_to_room_alias(muc + "/some nick", ROOMS) == alias.lower()


@pytest.mark.parametrize(
    "alias", ["room:hub.example", "#:hub.example", "#room", "# room:hub.example", "#a\tb:hub.x"]
)
def test_room_alias_to_muc_rejects(alias: str) -> None:
    with pytest.raises(ValueError):
        room_alias_to_muc(alias, ROOMS)


@pytest.mark.parametrize(
    "jid",
    [r"room\3ahub.example@" + USERS, ROOMS, r"room@" + ROOMS, r"\20room\3ahub.example@" + ROOMS],
)
def test_muc_to_room_alias_rejects(jid: str) -> None:
    assert muc_to_room_alias(jid, ROOMS) is None


@given(st.text(max_size=60), st.text(max_size=30))
def test_mappings_never_raise_on_garbage(jid: str, domain: str) -> None:
    jid_to_mxid(jid, domain)
    muc_to_room_alias(jid, domain)


# --- JID syntax -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jid", "parts"),
    [
        ("example.com", (None, "example.com", None)),
        ("juliet@example.com", ("juliet", "example.com", None)),
        ("juliet@example.com/foo bar", ("juliet", "example.com", "foo bar")),
        ("juliet@example.com/foo@bar/baz", ("juliet", "example.com", "foo@bar/baz")),
        ("example.com/foo@bar", (None, "example.com", "foo@bar")),
        ("room@muc.example/Ünïcode 🎉", ("room", "muc.example", "Ünïcode 🎉")),
        ("juliet@[2001:db8::1]", ("juliet", "[2001:db8::1]", None)),
        ("juliet@例え.jp", ("juliet", "例え.jp", None)),
        (r"d\27artagnan@example.com", (r"d\27artagnan", "example.com", None)),
    ],
)
def test_split_jid(jid: str, parts: tuple[str | None, str, str | None]) -> None:
    assert split_jid(jid) == parts
    assert is_valid_jid(jid)


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "@",
        "@example.com",
        "a@@example.com",
        "a@b@example.com",
        "juliet@",
        "juliet@example.com/",
        "/resource",
        "jul iet@example.com",
        "juliet@exa mple.com",
        "juliet\t@example.com",
        "jul\x00iet@example.com",
        "juliet@example.com/re\x00source",
        "juliet@example.com/line\nbreak",
        "ju\u200bliet@example.com",
        "o'hara@example.com",
        'say"hi@example.com',
        "a&b@example.com",
        "a<b>@example.com",
        "a:b@example.com",
        "juliet@example..com",
        "juliet@.example.com",
        "juliet@exa$mple.com",
        "juliet@[not-ipv6]",
        "juliet@[::1",
        "x" * 1024 + "@example.com",
        "juliet@" + "a" * 1024,
        "juliet@example.com/" + "r" * 1024,
        "juliet@example.com/" + "é" * 512,  # 1024 bytes
        "\ud800@example.com",
    ],
)
def test_hostile_jids_rejected(hostile: str) -> None:
    assert not is_valid_jid(hostile)
    with pytest.raises(ValueError):
        split_jid(hostile)


def test_part_sizes_at_the_limit_accepted() -> None:
    assert is_valid_jid("x" * 1023 + "@" + "a" * 1023 + "/" + "é" * 511 + "r")


@given(st.text(max_size=80))
def test_is_valid_jid_never_raises(text: str) -> None:
    assert isinstance(is_valid_jid(text), bool)


def test_bare_jid_folds_case_and_keeps_no_resource() -> None:
    assert bare_jid("Juliet@Example.COM./Balcony") == "juliet@example.com"
    assert bare_jid("Example.com/x") == "example.com"
    with pytest.raises(ValueError):
        bare_jid("not a jid")
