"""Bounce addresses (VERP): one per copy, unforgeable without the key, within RFC 5321 limits."""

from __future__ import annotations

from bridge.email.protocol.addresses import new_portal_address, split_address
from bridge.email.verp import BounceAddresses, split_bounce_address

ROOM = "room.abcdefghijklmnop@mail.test"
MID = "<abc@mail.test>"


def test_each_recipient_gets_its_own_address_and_only_it_matches() -> None:
    bounces = BounceAddresses(b"k" * 32)
    anna, ben = (
        bounces.sender(ROOM, MID, "anna@one.example"),
        bounces.sender(ROOM, MID, "ben@x.example"),
    )
    assert anna != ben
    portal, token = split_bounce_address(anna)
    assert portal == ROOM and token is not None
    sent_to = ["ben@x.example", "anna@one.example"]
    assert bounces.recipient(token, MID, sent_to) == "anna@one.example"
    assert bounces.recipient(token.upper(), MID, sent_to) == "anna@one.example"  # MTAs may fold
    assert bounces.recipient(token, "<other@mail.test>", sent_to) is None  # another mail
    assert BounceAddresses(b"x" * 32).recipient(token, MID, sent_to) is None  # another key


def test_addresses_that_are_no_bounce_addresses_are_the_portal_s_own() -> None:
    for address in (ROOM, "room.abcdefghijklmnop+b-short@mail.test", "+b-aaaaaaaaaaaa@mail.test",
                    "room.abcdefghijklmnop+b-aaaaaaaaaa!!@mail.test"):  # fmt: skip
        assert split_bounce_address(address) == (address, None)


def test_the_longest_portal_s_bounce_address_fits_a_local_part() -> None:
    portal = new_portal_address("x" * 200, "mail.test")
    sender = BounceAddresses(b"k" * 32).sender(portal, MID, "anna@one.example")
    assert len(split_address(sender)[0]) <= 64
    assert split_bounce_address(sender)[0] == portal
