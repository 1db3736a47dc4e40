"""A MUC's claim of an occupant's real JID stands for that person's own ghost only where the
room speaks for its own server: a hostile room elsewhere could otherwise post as anyone's
ghost (second hostile review). Elsewhere the occupant is known by occupant-id or nick."""

from __future__ import annotations

import pytest

from bridge.xmpp.muc import MUC_USER_NS, MucTracker, vouched_by_room
from tests.xmpp.test_muc_presence import presence


@pytest.mark.parametrize(("room", "real", "vouched"), [
    ("team@muc.agency.lu", "alice@agency.lu", True),  # the service's parent: its own server
    ("team@muc.agency.lu", "bot@muc.agency.lu", True),
    ("team@muc.agency.lu", "alice@other.lu", False),  # another server's person
    ("team@muc.evil.test", "minister@agency.lu", False),  # a hostile room claiming a VIP
    ("team@evil.test", "alice@agency.lu", False),
    ("team@muc.agency.lu", "alice@agency.lu.evil.test", False),
    ("team@muc.agency.lu", "agency.lu", True),  # a bare domain JID of that server
])  # fmt: skip
def test_a_room_vouches_only_for_its_own_server(room: str, real: str, vouched: bool) -> None:
    assert vouched_by_room(room, real) is vouched


def test_the_tracker_keeps_a_claim_only_where_the_room_vouches() -> None:
    mucs = MucTracker()
    for room in ("team@muc.agency.lu", "team@muc.evil.test"):
        mucs.room(room)
        claim = presence(f"{room}/Minister", "available")
        claim.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item").set(
            "jid", "minister@agency.lu/pc"
        )
        mucs.on_presence(claim)
    assert mucs.room("team@muc.agency.lu").occupants == {"Minister": "minister@agency.lu"}
    assert mucs.room("team@muc.evil.test").occupants == {"Minister": None}
