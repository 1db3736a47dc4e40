"""Review of the XMPP hub's component health (e2e81a4): ``SupportsHealthDetail`` says a detail
"must never hold a secret, not even inside an error text", and the component's own errors are
redacted (link.redact); a component that fails to *start* was not."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import Iq, Message

from bridge.core import NotSupported, RemoteUserID
from bridge.xmpp.invites import Invitations, InviteLimits
from bridge.xmpp.matrix_invites import MatrixInvitations
from tests.xmpp.test_component_health import SECRET, hub  # noqa: F401
from tests.xmpp.test_matrix_invites import (
    ALICE,
    DISCO,
    NS,
    ROOM,
    XAVIER,
    Context,
    Puppets,
    Room,
    portal,
)
from tests.xmpp.test_muc_extras import FakeRooms, make_cfg, make_component


async def test_a_start_failure_that_echoes_the_secret_shows_it_nowhere(
    hub: Any,  # noqa: F811
) -> None:
    """Hostile: starting agency B's component fails with an error whose text carries its
    secret (a library echoing its arguments, a config repr). Neither /_pontis/health's
    client_details nor the client state (``clients`` message, `pontis status`) shows it."""
    clients, ctx, _ = hub
    a, b = clients.clients

    async def started() -> None:
        a.component.link.up(clients._clock())

    async def fails() -> None:
        raise RuntimeError(f"cannot start component with secret={SECRET!s}")

    a.connect, b.connect = started, fails
    ctx.background = lambda coro, name: asyncio.create_task(coro, name=name)
    await clients.connect()
    try:
        detail = json.dumps(clients.health_detail())
    finally:
        await clients.disconnect()
    assert "failed to start" in detail
    assert SECRET not in detail
    assert all(SECRET not in message for _, _, message in ctx.states)


class _Chatty(Room):
    """A hostile MUC: refuses every invitation with a 100 000-character error text."""

    def receive(self, stanza: Any, *_: Any, **__: Any) -> None:
        self.sent.append(stanza)
        frm, to, sid = stanza["from"], stanza["to"], stanza["id"]
        if isinstance(stanza, Message) and str(to) == ROOM:
            text = "Re-invite them at https://evil.example/ " + "A" * 100_000
            self._answer(
                f"<message xmlns='{NS}' type='error' id='{sid}' from='{ROOM}' to='{frm}'>"
                "<error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                f"<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>{text}</text></error>"
                "</message>"
            )
        if isinstance(stanza, Iq) and str(to) == ROOM:
            self._answer(
                f"<iq xmlns='{NS}' type='result' id='{sid}' from='{ROOM}' to='{frm}'>"
                f"<query xmlns='{DISCO}'><feature var='muc_membersonly'/></query></iq>"
            )


async def test_a_rooms_huge_refusal_text_is_bounded_in_what_matrix_shows() -> None:
    """Hostile: a bridged MUC answers an invitation with a 100 kB error text. The inviter is
    still told the room refused (the condition), but the room's own words are cut: the notice
    is the ghost's leave reason, and a Matrix event over 64 KiB is refused by the homeserver,
    so the ghost would stay invited and the inviter never learn why."""
    component = make_component([])
    room = _Chatty(component)
    ctx: Any = Context()
    outgoing = MatrixInvitations(ctx, make_cfg(), component, None, Puppets())
    inv = Invitations(ctx, make_cfg(), component, FakeRooms(), InviteLimits(),  # type: ignore[arg-type]
                      outgoing=outgoing)  # fmt: skip
    with pytest.raises(NotSupported) as refused:
        await inv.from_matrix(portal(), ALICE, RemoteUserID(XAVIER))
    message = refused.value.user_message
    assert "forbidden" in message and ROOM in message and XAVIER in message
    assert len(message.encode()) < 2000, f"{len(message.encode())} bytes into a leave reason"
    assert len(str(refused.value).encode()) < 2000
    assert len(room.invitations()) == 1


async def test_presences_from_many_strangers_leave_nothing_behind_in_memory() -> None:
    """Hostile (resource growth keyed by attacker input): any XMPP server may send presence to
    any JID of the component's domain. slixmpp's roster kept a node per sender and an item per
    (recipient, sender) for ever, ~3 KB each: a server inventing addresses could grow the
    bridge without bound. The bridge answers presence from the JID alone (identity.py), so
    nothing needs that roster; the presence events it handles still fire."""
    component = make_component([])
    xmpp = component.xmpp
    fired: list[str] = []
    for event in ("presence_available", "presence_unsubscribed", "presence_subscribed"):
        xmpp.add_event_handler(event, lambda pres, e=event: fired.append(e))
    # subscribe, unsubscribe and probe are the Matrix users' component's own (identity.py);
    # everything else went through slixmpp's roster
    kinds = ("", " type='unsubscribed'", " type='subscribed'", " type='unavailable'")
    for i in range(2000):
        raw = (f"<presence xmlns='{NS}' from='u{i}@evil.example/r' "
               f"to='m{i}@{component.domain}'{kinds[i % 4]}/>")  # fmt: skip
        xmpp._spawn_event(ET.fromstring(raw))
    await asyncio.sleep(0.05)
    assert fired.count("presence_available") == 500
    assert fired.count("presence_unsubscribed") == fired.count("presence_subscribed") == 500
    roster: Any = xmpp.roster
    kept = len(roster._rosters) + sum(len(node._jids) for node in roster._rosters.values())
    assert kept < 10, f"{kept} roster entries kept for 2000 strangers' presences"


async def test_subscriptions_and_probes_to_a_component_nobody_answers_keep_nothing() -> None:
    """Hostile, as above, for the rooms' component (no identity.py there): subscribe,
    unsubscribe and probe from invented addresses went through slixmpp's roster too."""
    component = make_component([])
    xmpp = component.xmpp
    kinds = (" type='subscribe'", " type='unsubscribe'", " type='probe'")
    for i in range(1500):
        raw = (f"<presence xmlns='{NS}' from='u{i}@evil.example/r' "
               f"to='room{i}@{component.domain}'{kinds[i % 3]}/>")  # fmt: skip
        xmpp._spawn_event(ET.fromstring(raw))
    await asyncio.sleep(0.05)
    roster: Any = xmpp.roster
    kept = len(roster._rosters) + sum(len(node._jids) for node in roster._rosters.values())
    assert kept < 10, f"{kept} roster entries kept for 1500 strangers' subscriptions"
