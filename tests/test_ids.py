from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.ids import NetworkID, RemoteUserID, escape_localpart, ghost_mxid, parse_ghost_mxid

XMPP = NetworkID("xmpp")


def test_examples_from_the_design() -> None:
    assert (
        ghost_mxid(XMPP, RemoteUserID("alice@xmpp.example"), "hub.test")
        == "@xmpp_alice=40xmpp.example:hub.test"
    )
    assert escape_localpart("Bob@Example.org") == "bob=40example.org"
    assert escape_localpart("a=b") == "a=3db"


@given(st.text())
def test_escaped_localparts_use_only_allowed_characters(value: str) -> None:
    assert re.fullmatch(r"[a-z0-9._\-/=]*", escape_localpart(value))


@given(st.text())
def test_ghost_mxid_round_trips_up_to_case(value: str) -> None:
    mxid = ghost_mxid(XMPP, RemoteUserID(value), "hub.test")
    assert parse_ghost_mxid(XMPP, mxid, "hub.test") == value.lower()


def test_foreign_and_malformed_mxids_are_not_ghosts() -> None:
    assert parse_ghost_mxid(XMPP, "@alice:hub.test", "hub.test") is None
    assert parse_ghost_mxid(XMPP, "@xmpp_alice:other.test", "hub.test") is None
    assert parse_ghost_mxid(XMPP, "@teams_alice:hub.test", "hub.test") is None
    assert parse_ghost_mxid(XMPP, "@xmpp_bad=zz:hub.test", "hub.test") is None
    assert parse_ghost_mxid(XMPP, "@xmpp_=ff:hub.test", "hub.test") is None  # not UTF-8
