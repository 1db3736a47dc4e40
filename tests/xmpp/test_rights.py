"""Matrix power levels as affiliations and roles in the rooms the bridge hosts, and kicks and
bans from Matrix shown there (bridge.xmpp.rights, HostedRooms.rights_changed / remove)."""

from __future__ import annotations

from typing import Any

import pytest
from slixmpp import Presence

from bridge.xmpp.moderation import ban_key
from bridge.xmpp.muc import MUC_USER_NS
from bridge.xmpp.rights import rights_of
from tests.xmpp.test_hosted import ROOM, XENA, joined, presence

ALICE, BOB = "@alice:hub.example", "@bob:hub.example"
_fixture = joined  # the hosted-room fixture: Xena has joined, Alice is a Matrix member


@pytest.mark.parametrize(("levels", "creators", "rights"), [
    ({"users": {ALICE: 100}}, [], ("owner", "moderator")),
    ({"users": {ALICE: 75}}, [], ("admin", "moderator")),
    ({"users": {ALICE: 50}}, [], ("member", "moderator")),
    ({"users": {ALICE: 49}}, [], ("member", "participant")),
    ({"users_default": 50}, [], ("member", "moderator")),
    ({}, [ALICE], ("owner", "moderator")),  # a creator of a newer room version
    ({"users": {ALICE: "lots"}}, [], ("member", "participant")),  # malformed: no power
    ({"users": [ALICE]}, [], ("member", "participant")),
])  # fmt: skip
def test_the_mapping_table(levels: dict[str, Any], creators: list[str],
                           rights: tuple[str, str]) -> None:  # fmt: skip
    assert rights_of(levels, creators, ALICE) == rights


def _items(sent: list[Any], nick: str) -> list[tuple[str, str]]:
    items = []
    for stanza in sent:
        if isinstance(stanza, Presence) and stanza["from"].resource == nick:
            item = stanza.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
            if item is not None:
                items.append((item.get("affiliation", ""), item.get("role", "")))
    return items


async def test_occupants_see_matrix_power_as_affiliations_and_changes_once(joined: Any) -> None:
    rooms, sent, _, _ = joined
    assert _items(sent, "Alice") == [("owner", "moderator")]  # on joining, from the levels
    sent.clear()
    await rooms.rights_changed(ROOM, {"users": {ALICE: 100}}, [])  # nothing changed for Alice
    assert _items(sent, "Alice") == []
    await rooms.rights_changed(ROOM, {"users": {ALICE: 50}}, [])
    assert _items(sent, "Alice") == [("member", "moderator")]
    await rooms.rights_changed(ROOM, {"users": {ALICE: 50, BOB: 100}}, [])  # Bob is no member
    assert _items(sent, "Alice") == [("member", "moderator")] and not _items(sent, "Bob")


async def test_a_banned_person_leaves_as_banned_and_cannot_come_back(joined: Any) -> None:
    rooms, sent, _, ctx = joined
    sent.clear()
    assert await rooms.remove(ROOM, "xena@xmpp.example", ban=True, reason="spam") == 1
    [gone] = [s for s in sent if isinstance(s, Presence)]
    codes = {s.get("code") for s in gone.xml.iterfind(f".//{{{MUC_USER_NS}}}status")}
    assert gone["type"] == "unavailable" and codes >= {"301", "110"}
    assert rooms.occupants(ROOM) == []
    ctx.kv[ban_key(ROOM, "xena@xmpp.example")] = "@alice:hub.example"
    sent.clear()
    await rooms._on_stanza(presence(rooms, XENA, f"{ROOM}/Xena"))
    [refused] = sent
    assert refused["type"] == "error" and refused["error"]["condition"] == "forbidden"
    assert rooms.occupants(ROOM) == []
    # Someone else, or nobody there: nothing to remove.
    assert await rooms.remove(ROOM, "mallory@xmpp.example", ban=False, reason="") == 0
