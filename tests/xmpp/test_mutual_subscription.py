"""A DM contact who subscribes to a Matrix user is asked back, so that their server sends their
presence and XEP-0084 avatar changes to the bridge; strangers are not. Without a server: the
real thing is tests/e2e/test_xmpp_pep_avatars.py."""

from __future__ import annotations

import asyncio
from typing import Any

from slixmpp import JID

from bridge.xmpp.ids import dm_key
from tests.xmpp.test_identity import ALICE, XMPP_USER, _settle, setup  # noqa: F401

CAPS = "{http://jabber.org/protocol/caps}c"


def _answers(sent: list[Any]) -> list[tuple[str | None, str, bool]]:
    """(type, to, carries caps) of each presence sent."""
    return [(p.xml.get("type"), str(p["to"]), p.xml.find(CAPS) is not None) for p in sent]


async def test_strangers_are_not_asked_back_and_their_subscribed_changes_nothing(
    setup: Any,  # noqa: F811
) -> None:
    identity, xmpp, _, sent = setup
    await identity._subscribe(xmpp.make_presence(pto=JID(ALICE), pfrom=JID("stranger@xmpp.example"),
                                                 ptype="subscribe"))  # fmt: skip
    assert [t for t, _, _ in _answers(sent)] == ["subscribed", None]
    sent.clear()
    for frm in ("stranger@xmpp.example", "m@refused.example"):
        await identity._subscribed(xmpp.make_presence(pto=JID(ALICE), pfrom=JID(frm),
                                                      ptype="subscribed"))  # fmt: skip
    assert sent == []


async def test_a_dm_contact_is_asked_back_and_sees_the_caps_once_accepted(
    setup: Any,  # noqa: F811
) -> None:
    _, xmpp, ctx, sent = setup
    xmpp.loop = asyncio.get_running_loop()  # made outside this loop: its tasks would not run
    key = dm_key(XMPP_USER, "@alice:hub.example")
    ctx.portals[(key.remote_id, key.receiver)] = object()
    xmpp._handle_presence(xmpp.make_presence(pto=JID(ALICE), pfrom=JID(XMPP_USER),
                                             ptype="subscribe"))  # fmt: skip
    await _settle()
    assert _answers(sent) == [("subscribed", XMPP_USER, False), (None, XMPP_USER, True),
                              ("subscribe", XMPP_USER, False)]  # fmt: skip
    assert {str(p["from"]) for p in sent} == {ALICE}
    sent.clear()
    xmpp._handle_presence(xmpp.make_presence(pto=JID(ALICE), pfrom=JID(XMPP_USER),
                                             ptype="subscribed"))  # fmt: skip
    await _settle()
    assert _answers(sent) == [(None, XMPP_USER, True)]


async def test_another_gateway_that_asks_back_too_is_asked_back_once(
    setup: Any,  # noqa: F811
) -> None:
    """Hostile (a loop between two gateways): a contact that answers each subscription
    request with one of its own, as a second hub would, gets ``subscribed`` each time but is
    asked back only once, so the two never bounce requests for ever."""
    _, xmpp, ctx, sent = setup
    xmpp.loop = asyncio.get_running_loop()  # made outside this loop: its tasks would not run
    key = dm_key(XMPP_USER, "@alice:hub.example")
    ctx.portals[(key.remote_id, key.receiver)] = object()
    for _ in range(5):
        xmpp._handle_presence(xmpp.make_presence(pto=JID(ALICE), pfrom=JID(XMPP_USER),
                                                 ptype="subscribe"))  # fmt: skip
        await _settle()
    kinds = [t for t, _, _ in _answers(sent)]
    assert kinds.count("subscribed") == 5
    assert kinds.count("subscribe") == 1
