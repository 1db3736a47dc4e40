from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.ghost_names import GhostNames
from bridge.core.ids import NetworkID, RemoteUserID, escape_localpart

XMPP = NetworkID("xmpp")
NAMES = GhostNames("hub.test")  # no templates configured: DESIGN §3's names


def test_examples_from_the_design() -> None:
    assert (
        NAMES.mxid(XMPP, RemoteUserID("alice@xmpp.example"))
        == "@xmpp_alice=40xmpp.example:hub.test"
    )
    assert escape_localpart("Bob@Example.org") == "bob=40example.org"
    assert escape_localpart("a=b") == "a=3db"


@given(st.text())
def test_escaped_localparts_use_only_allowed_characters(value: str) -> None:
    assert re.fullmatch(r"[a-z0-9._\-/=]*", escape_localpart(value))


@given(st.text(min_size=1))
def test_ghost_mxid_round_trips_up_to_case(value: str) -> None:
    mxid = NAMES.mxid(XMPP, RemoteUserID(value))
    assert NAMES.parse(XMPP, mxid) == value.lower()


def test_foreign_and_malformed_mxids_are_not_ghosts() -> None:
    assert NAMES.parse(XMPP, "@alice:hub.test") is None
    assert NAMES.parse(XMPP, "@xmpp_alice:other.test") is None
    assert NAMES.parse(XMPP, "@teams_alice:hub.test") is None
    assert NAMES.parse(XMPP, "@xmpp_bad=zz:hub.test") is None
    assert NAMES.parse(XMPP, "@xmpp_=ff:hub.test") is None  # not UTF-8
    assert NAMES.parse(XMPP, "@xmpp_:hub.test") is None  # no id: nobody
